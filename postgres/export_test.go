package postgres

import "context"

// Ways to insert event ids, for the benchmark that compares them.

func UseUpsertForEvents(s *Store) { s.insertEvents = insertEventsUpsert }

func UseCopyForEvents(s *Store) { s.insertEvents = insertEventsCopy }

// QuarantineInboxRows is quarantineInboxRows, the inbox rows named by
// provider and id.
func QuarantineInboxRows(ctx context.Context, s *Store, keys ...[2]string) (int, error) {
	ks := make([]inboxKey, len(keys))
	for i, k := range keys {
		ks[i] = inboxKey{k[0], k[1]}
	}
	return s.quarantineInboxRows(ctx, ks...)
}
