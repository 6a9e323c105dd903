package postgres

// UseCopyForEvents makes s insert event ids through COPY into a staging
// table instead of one array statement, for the benchmark that compares them.
func UseCopyForEvents(s *Store) { s.insertEvents = insertEventsCopy }
