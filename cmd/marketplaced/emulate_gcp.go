package main

import (
	"context"
	"flag"
	"log/slog"
)

// gcpEmulator runs the GCP marketplace emulator (package emulator/gcp).
type gcpEmulator struct{}

func newGCPEmulator() *gcpEmulator { return &gcpEmulator{} }

func (*gcpEmulator) Name() string                { return "gcp" }
func (*gcpEmulator) RegisterFlags(*flag.FlagSet) {}
func (*gcpEmulator) Start(context.Context, *slog.Logger) (string, error) {
	return "", errNotBuilt
}
