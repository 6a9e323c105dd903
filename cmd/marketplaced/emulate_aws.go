package main

import (
	"context"
	"flag"
	"log/slog"
)

// awsEmulator runs the AWS marketplace emulator (package emulator/aws).
type awsEmulator struct{}

func newAWSEmulator() *awsEmulator { return &awsEmulator{} }

func (*awsEmulator) Name() string                { return "aws" }
func (*awsEmulator) RegisterFlags(*flag.FlagSet) {}
func (*awsEmulator) Start(context.Context, *slog.Logger) (string, error) {
	return "", errNotBuilt
}
