package mysql

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/fleetmigrate/fleetmigrate/engine"
)

// What the mariadb client prints when the server refuses a statement of a
// script: the statement (the customer's data), then the error.
const echoed = "--------------\nINSERT INTO `orders` VALUES (1,'secret customer data ü'),(2,'more')\n--------------\n\n"

func toolErr(stderr string) error {
	return &engine.ToolError{Tool: "mariadb", Err: &exec.ExitError{}, Stderr: stderr}
}

func TestClientErrorKeepsOnlyTheErrorLines(t *testing.T) {
	err := clientError(toolErr(echoed + "ERROR 1062 (23000) at line 12: Duplicate entry 'secret customer data ü' for key 'email'"))
	if strings.Contains(err.Error(), "secret customer data") || !strings.Contains(err.Error(), "ERROR 1062 (23000) at line 12: Duplicate entry '…' for key 'email'") {
		t.Fatalf("client error: %v", err)
	}
	err = clientError(toolErr("ERROR 1366 (22007) at line 9: Incorrect integer value: 'it''s secret' for column `shop`.`orders`.`n` at row 1"))
	if strings.Contains(err.Error(), "secret") || !strings.Contains(err.Error(), "Incorrect integer value: '…' for column `shop`.`orders`.`n` at row 1") {
		t.Fatalf("client error: %v", err)
	}
	long := strings.Repeat("x", 5000)
	if err := clientError(toolErr(long)); len(err.Error()) > 1100 {
		t.Fatalf("an unrecognised message is not cut: %d bytes", len(err.Error()))
	}
	plain := errors.New("connection refused")
	if err := clientError(plain); err != plain { //nolint:errorlint // the very same error, unwrapped
		t.Fatal("a non-tool error changed")
	}
}

func TestDiskFullIsPermanent(t *testing.T) {
	s := &Server{srv: engine.Server{Host: "dst-1", Address: "10.0.0.1:3306"}}
	for _, stderr := range []string{
		echoed + "ERROR 1114 (HY000) at line 52: The table 'orders' is full",
		"ERROR 1021 (HY000) at line 3: Disk full (/tmp/#sql_1.MAI); waiting for someone to free some space... (errno: 28 \"No space left on device\")",
		"ERROR 3 (HY000) at line 9: Error writing file './shop/orders.frm' (Errcode: 28 \"No space left on device\")",
	} {
		err := s.diskFull(clientError(toolErr(stderr)))
		if !errors.Is(err, engine.ErrPermanent) || !strings.Contains(err.Error(), "is out of disk space") || strings.Contains(err.Error(), "secret") {
			t.Errorf("%q: %v", stderr, err)
		}
	}
	other := clientError(toolErr(echoed + "ERROR 2013 (HY000) at line 52: Lost connection to server during query"))
	if err := s.diskFull(other); errors.Is(err, engine.ErrPermanent) {
		t.Errorf("a lost connection became permanent: %v", err)
	}
}

func TestRedactServerError(t *testing.T) {
	in := &mysqldrv.MySQLError{Number: 1062, Message: "Duplicate entry 'alice@secret.example' for key 'email'"}
	err := redactServerError(fmt.Errorf("exec: %w", in))
	var me *mysqldrv.MySQLError
	if !errors.As(err, &me) || me.Number != 1062 || me.Message != "Duplicate entry '…' for key 'email'" {
		t.Fatalf("redacted: %v", err)
	}
	if in.Message == me.Message {
		t.Fatal("the driver's error was changed in place")
	}
}
