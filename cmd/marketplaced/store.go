package main

import (
	"context"
	"fmt"
	"os"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/lifecycle"
	"github.com/saasmarket/marketplace/postgres"
	"github.com/saasmarket/marketplace/server"
	"github.com/saasmarket/marketplace/sqlite"
)

// store is what the daemon keeps its state in: SQLite in the data folder,
// or a PostgreSQL database that several daemons share.
type store interface {
	ledger.Store
	lifecycle.Store
	// The rows it could not read and moved aside, for the operator.
	marketplace.QuarantineStore
	Close() error
}

var (
	_ store = (*sqlite.Store)(nil)
	_ store = (*postgres.Store)(nil)
)

// openStore opens the store cfg names (see server.Config.Store). Its
// errors show a PostgreSQL URL only with the password redacted, as
// package postgres does.
func openStore(ctx context.Context, cfg server.Config) (store, error) {
	if cfg.Store != "" {
		s, err := postgres.Open(ctx, cfg.Store)
		if err != nil {
			return nil, fmt.Errorf("setting -store: %w", err)
		}
		return s, nil
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("setting -data: %w", err)
	}
	return sqlite.Open(ctx, cfg.DBPath())
}
