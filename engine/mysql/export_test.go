package mysql

// Every table with a one-column integer key is checksummed in ranges when
// a test verifies with more than one job, so that every verification in
// the tests compares the ranged sums with the one-pass sums the dump made.
func init() { chunkRows = 0 }

// Ungrouped makes st apply every source transaction in its own destination
// transaction (the benchmark's comparison).
func Ungrouped(st *Streamer) { st.maxGroup = 1 }
