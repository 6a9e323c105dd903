package main

import (
	"context"
	"flag"
	"log/slog"
)

// azureEmulator runs the Azure marketplace emulator (package emulator/azure).
type azureEmulator struct{}

func newAzureEmulator() *azureEmulator { return &azureEmulator{} }

func (*azureEmulator) Name() string                { return "azure" }
func (*azureEmulator) RegisterFlags(*flag.FlagSet) {}
func (*azureEmulator) Start(context.Context, *slog.Logger) (string, error) {
	return "", errNotBuilt
}
