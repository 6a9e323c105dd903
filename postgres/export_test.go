package postgres

// Ways to insert event ids, for the benchmark that compares them.

func UseUpsertForEvents(s *Store) { s.insertEvents = insertEventsUpsert }

func UseCopyForEvents(s *Store) { s.insertEvents = insertEventsCopy }
