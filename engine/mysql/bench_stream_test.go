package mysql_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/mysql"
	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// BenchmarkMySQLStreamSourceCost measures what streams reading one
// MariaDB source's binary log cost that source: while a writer inserts
// about 2 MB/s of rows into a database nobody streams (the other
// customers of a shared server) and 20 rows/s into each streamed one, N
// databases (0, 1, 8, 32) are streamed to one destination; over each 10 s
// window it reports the source server's CPU (cores), the bytes it read
// through read(2) (the binary log, mostly from the page cache) and from
// disk, the binary log's growth, and the streams' lag at the end.
func BenchmarkMySQLStreamSourceCost(b *testing.B) {
	fleettest.Integration(b)
	for _, n := range []int{0, 1, 8, 32} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) { benchStreams(b, n) })
	}
}

func benchStreams(b *testing.B, n int) {
	src, dst := benchServers(b)
	srcM := src.m
	exec(b, src.root, "CREATE DATABASE noise", "CREATE TABLE noise.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(1000))")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var dbs []string
	for i := range n {
		db := fmt.Sprintf("streamed_%d", i)
		q := ident.QuoteMySQL(db)
		exec(b, src.root, "CREATE DATABASE "+q, "CREATE TABLE "+q+".t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(100))",
			"INSERT INTO "+q+".t (v) SELECT CONCAT('row ', seq) FROM "+q+".seq_1_to_10000")
		s, err := src.srv.Inspect(ctx, db)
		if err != nil {
			b.Fatal(err)
		}
		pos, _, err := dst.srv.CopyFrom(ctx, src.srv, s, "source", func(mysql.ImportRecord) error { return nil }, nil)
		if err != nil {
			b.Fatal(err)
		}
		st := mysql.Stream{Name: engine.StreamName(int64(i+1), db), Database: db, Start: pos}
		if err := dst.srv.CreateStreamRecord(ctx, &st, srcM.Addr()); err != nil {
			b.Fatal(err)
		}
		streamer := dst.srv.NewStreamer(st.Name, engine.Server{User: adminUser, Password: adminPass}, uint32(1000+i), nil)
		go func() { _ = streamer.Run(ctx) }()
		dbs = append(dbs, db)
	}
	// The writer: other customers' traffic and the streamed databases'.
	var wg sync.WaitGroup
	wg.Go(func() {
		row := strings.Repeat("x", 1000)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			_, _ = src.root.ExecContext(ctx, "INSERT INTO noise.t (v) SELECT ? FROM noise.seq_1_to_20", row)
			if i%5 == 0 {
				for _, db := range dbs {
					_, _ = src.root.ExecContext(ctx, "INSERT INTO "+ident.QuoteMySQL(db)+".t (v) VALUES ('streamed')")
				}
			}
		}
	})
	defer func() { cancel(); wg.Wait() }()
	time.Sleep(2 * time.Second) // settle
	const window = 10 * time.Second
	b.ResetTimer()
	var cpu, rchar, disk, binlog float64
	var lag int64
	for range b.N {
		c0, r0, d0 := procCost(b, srcM.PID())
		p0, err := src.srv.BinlogNow(ctx)
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(window)
		c1, r1, d1 := procCost(b, srcM.PID())
		p1, err := src.srv.BinlogNow(ctx)
		if err != nil {
			b.Fatal(err)
		}
		files, _ := src.srv.BinlogFiles(ctx)
		cpu += (c1 - c0) / window.Seconds()
		rchar += float64(r1-r0) / window.Seconds() / 1e6
		disk += float64(d1-d0) / window.Seconds() / 1e6
		binlog += float64(mysql.LagBytes(p0, p1, files)) / window.Seconds() / 1e6
		lag = 0
		recs, _ := dst.srv.StreamRecords(ctx, engine.StreamPrefix)
		for _, r := range recs {
			lag = max(lag, mysql.LagBytes(r.Applied, p1, files))
		}
	}
	b.StopTimer()
	k := float64(b.N)
	b.ReportMetric(cpu/k, "src-cpu-cores")
	b.ReportMetric(rchar/k, "src-read-MB/s")
	b.ReportMetric(disk/k, "src-disk-MB/s")
	b.ReportMetric(binlog/k, "binlog-MB/s")
	b.ReportMetric(float64(lag)/1e3, "max-lag-kB")
}

// procCost reads a process's CPU seconds (user + system), bytes read
// through read(2) and bytes read from storage.
func procCost(b *testing.B, pid int) (cpu float64, rchar, readBytes int64) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command's closing parenthesis: utime is the 12th,
	// stime the 13th (1-based fields 14 and 15 of the line).
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+2:])
	f := strings.Fields(rest)
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	cpu = (ut + st) / 100 // USER_HZ
	io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(io), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "rchar":
			rchar = n
		case "read_bytes":
			readBytes = n
		}
	}
	return cpu, rchar, readBytes
}

// BenchmarkMySQLStreamKeyless measures what a table without a key costs a
// stream: 2,000 single-row updates at the source, applied at the
// destination to a table of 20,000 rows with a primary key and to the same
// table without one (each applied change then scans the table). It reports
// the changes applied per second.
func BenchmarkMySQLStreamKeyless(b *testing.B) {
	fleettest.Integration(b)
	for _, keyed := range []bool{true, false} {
		b.Run(map[bool]string{true: "primary-key", false: "no-key"}[keyed], func(b *testing.B) {
			srcM := fleettest.NewMariaDB(b, fleettest.MariaDBConfig{})
			dstM := fleettest.NewMariaDB(b, fleettest.MariaDBConfig{})
			for _, m := range []*fleettest.MariaDB{srcM, dstM} {
				m.EnsureAdmin(b, adminUser, adminPass)
			}
			src := &side{name: "source", m: srcM, root: srcM.RootDB(b), srv: openServer(b, srcM, "source", mysql.Options{})}
			dst := &side{name: "destination", m: dstM, root: dstM.RootDB(b), srv: openServer(b, dstM, "destination", mysql.Options{})}
			key := ""
			if keyed {
				key = " PRIMARY KEY"
			}
			exec(b, src.root, "CREATE DATABASE k", "CREATE TABLE k.t (id INT NOT NULL"+key+", v INT, pad VARCHAR(100))",
				"INSERT INTO k.t SELECT seq, 0, REPEAT('p', 100) FROM k.seq_1_to_20000")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s, err := src.srv.Inspect(ctx, "k")
			if err != nil {
				b.Fatal(err)
			}
			pos, _, err := dst.srv.CopyFrom(ctx, src.srv, s, "source", func(mysql.ImportRecord) error { return nil }, nil)
			if err != nil {
				b.Fatal(err)
			}
			st := mysql.Stream{Name: engine.StreamName(1, "k"), Database: "k", Start: pos}
			if err := dst.srv.CreateStreamRecord(ctx, &st, srcM.Addr()); err != nil {
				b.Fatal(err)
			}
			streamer := dst.srv.NewStreamer(st.Name, engine.Server{User: adminUser, Password: adminPass}, 77, nil)
			go func() { _ = streamer.Run(ctx) }()
			b.ResetTimer()
			var rate float64
			for i := range b.N {
				// Pause the stream while the source writes, then time the
				// apply alone.
				if _, err := streamer.Pause(ctx); err != nil {
					b.Fatal(err)
				}
				for j := range 2000 {
					exec(b, src.root, fmt.Sprintf("UPDATE k.t SET v = %d WHERE id = %d", i+1, (j*7919)%20000+1))
				}
				now, err := src.srv.BinlogNow(ctx)
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				streamer.Resume()
				if ok, _, err := dst.srv.WaitStreamApplied(ctx, st.Name, now, 10*time.Minute); !ok || err != nil {
					b.Fatalf("not applied: %v", err)
				}
				rate += 2000 / time.Since(start).Seconds()
			}
			b.ReportMetric(rate/float64(b.N), "changes/s")
		})
	}
}

// BenchmarkMySQLStreamApply measures whether streams keep up with their
// databases' writes: 8 databases of one MariaDB source, each taking about
// 250 (then 1,000) single-row INSERT transactions a second from its own
// writer (2,000/s, 8,000/s on the source), streamed to one destination, with consecutive source
// transactions applied in groups (the default) or each in its own
// destination transaction (as before groups). Over each 10 s window it
// reports per stream the rows and source transactions applied a second,
// the destination commits a second, what the writers wrote a second, and
// the largest lag at the end (a lag that grows: the streams do not keep
// up).
func BenchmarkMySQLStreamApply(b *testing.B) {
	fleettest.Integration(b)
	for _, rate := range []int{250, 1000} {
		for _, grouped := range []bool{true, false} {
			b.Run(fmt.Sprintf("rate=%d/grouped=%v", rate, grouped), func(b *testing.B) { benchApply(b, rate, grouped) })
		}
	}
}

func benchApply(b *testing.B, rate int, grouped bool) {
	const n = 8
	src, dst := benchServers(b)
	srcM := src.m
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var dbs []string
	var streamers []*mysql.Streamer
	for i := range n {
		db := fmt.Sprintf("busy_%d", i)
		q := ident.QuoteMySQL(db)
		exec(b, src.root, "CREATE DATABASE "+q, "CREATE TABLE "+q+".t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(100), at DATETIME(6) DEFAULT NOW(6))")
		s, err := src.srv.Inspect(ctx, db)
		if err != nil {
			b.Fatal(err)
		}
		pos, _, err := dst.srv.CopyFrom(ctx, src.srv, s, "source", func(mysql.ImportRecord) error { return nil }, nil)
		if err != nil {
			b.Fatal(err)
		}
		st := mysql.Stream{Name: engine.StreamName(int64(i+1), db), Database: db, Start: pos}
		if err := dst.srv.CreateStreamRecord(ctx, &st, srcM.Addr()); err != nil {
			b.Fatal(err)
		}
		streamer := dst.srv.NewStreamer(st.Name, engine.Server{User: adminUser, Password: adminPass}, uint32(2000+i), nil)
		if !grouped {
			mysql.Ungrouped(streamer)
		}
		go func() { _ = streamer.Run(ctx) }()
		dbs = append(dbs, db)
		streamers = append(streamers, streamer)
	}
	// One writer per database, each on its own session, paced at rate
	// single-row transactions a second (autocommit).
	var wg sync.WaitGroup
	var written atomic.Int64
	for _, db := range dbs {
		wg.Go(func() {
			c, err := src.root.Conn(ctx)
			if err != nil {
				return
			}
			defer c.Close()
			t := time.NewTicker(time.Second / time.Duration(rate))
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				if _, err := c.ExecContext(ctx, "INSERT INTO "+ident.QuoteMySQL(db)+".t (v) VALUES ('a row of a busy customer')"); err == nil {
					written.Add(1)
				}
			}
		})
	}
	defer func() { cancel(); wg.Wait() }()
	time.Sleep(3 * time.Second) // settle
	const window = 10 * time.Second
	applied := func() (rows, txns, commits int64) {
		for _, s := range streamers {
			r, t, c := s.Applied()
			rows, txns, commits = rows+r, txns+t, commits+c
		}
		return
	}
	b.ResetTimer()
	var rowsPS, txnsPS, commitsPS, writtenPS float64
	var lag int64
	for range b.N {
		r0, t0, c0 := applied()
		w0 := written.Load()
		time.Sleep(window)
		r1, t1, c1 := applied()
		w1 := written.Load()
		rowsPS += float64(r1-r0) / window.Seconds() / n
		txnsPS += float64(t1-t0) / window.Seconds() / n
		commitsPS += float64(c1-c0) / window.Seconds() / n
		writtenPS += float64(w1-w0) / window.Seconds() / n
		now, err := src.srv.BinlogNow(ctx)
		if err != nil {
			b.Fatal(err)
		}
		files, _ := src.srv.BinlogFiles(ctx)
		recs, _ := dst.srv.StreamRecords(ctx, engine.StreamPrefix)
		lag = 0
		for _, r := range recs {
			lag = max(lag, mysql.LagBytes(r.Applied, now, files))
		}
	}
	b.StopTimer()
	k := float64(b.N)
	b.ReportMetric(writtenPS/k, "written-txn/s/db")
	b.ReportMetric(rowsPS/k, "applied-rows/s/stream")
	b.ReportMetric(txnsPS/k, "applied-txn/s/stream")
	b.ReportMetric(commitsPS/k, "dst-commits/s/stream")
	b.ReportMetric(float64(lag)/1e6, "max-lag-MB")
}

// benchServers starts a source and a destination server of their own for
// a benchmark.
func benchServers(b *testing.B) (src, dst *side) {
	srcM := fleettest.NewMariaDB(b, fleettest.MariaDBConfig{})
	dstM := fleettest.NewMariaDB(b, fleettest.MariaDBConfig{})
	for _, m := range []*fleettest.MariaDB{srcM, dstM} {
		m.EnsureAdmin(b, adminUser, adminPass)
	}
	src = &side{name: "source", m: srcM, root: srcM.RootDB(b), srv: openServer(b, srcM, "source", mysql.Options{})}
	dst = &side{name: "destination", m: dstM, root: dstM.RootDB(b), srv: openServer(b, dstM, "destination", mysql.Options{})}
	return src, dst
}
