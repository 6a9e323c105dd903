package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/saasmarket/marketplace"
)

const quarantineUsage = `quarantine list | show -id N [-raw] | restore -id N [-file MENDED] | discard -id N [-raw]   [flags]

A stored row the daemon could not read (an entry of the ledger's usage log,
a notification of the lifecycle inbox) is moved aside, with its reason, so
that it halts nothing else; nothing in it is billed or applied meanwhile.

  list      the quarantined rows and their reasons
  show      one row: its reason and its data (a hex dump of a log entry; the
            columns of an inbox row as JSON). -raw prints only the data as
            stored, to save, mend and give to restore -file.
  restore   put the row back: as stored (once what made it unreadable is
            mended), or with -file, the mended row (a log entry's bytes, or
            an inbox row's JSON). A row that still cannot be read is refused,
            saying what is wrong, and stays quarantined.
  discard   give up on the row (garbage that can never be mended): it leaves
            the quarantine for good, its usage is never billed and its
            notification never applied. Prints what was discarded, data and
            all (the daemon keeps no copy); -raw prints only the data as
            stored, to keep.`

// runQuarantine is marketplaced quarantine list|show|restore|discard.
func runQuarantine(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "show" && args[0] != "restore" && args[0] != "discard") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			fmt.Fprintln(stdout, "usage: marketplaced "+quarantineUsage)
			return flag.ErrHelp
		}
		return errors.New("quarantine: want list, show, restore or discard: marketplaced " + quarantineUsage)
	}
	action := args[0]
	var (
		id   int64
		raw  bool
		file string
	)
	f, src, err := adminCommand(ctx, "quarantine "+action, quarantineUsage, args[1:], stderr, func(fs *flag.FlagSet) {
		if action == "list" {
			return
		}
		fs.Int64Var(&id, "id", 0, "the quarantined row's id (quarantine list); required")
		switch action {
		case "show":
			fs.BoolVar(&raw, "raw", false, "print only the row's data as stored (to save and mend)")
		case "restore":
			fs.StringVar(&file, "file", "", "the mended row (- reads standard input); without it the row goes back as stored")
		case "discard":
			fs.BoolVar(&raw, "raw", false, "print only the discarded row's data as stored (the last copy, to keep)")
		}
	})
	if err != nil {
		return err
	}
	defer src.Close()
	if action != "list" && id < 1 {
		return fmt.Errorf("quarantine %s: setting -id: is required (a row's id from quarantine list)", action)
	}
	switch action {
	case "show":
		q, err := src.QuarantinedRow(ctx, id)
		if err != nil {
			return fmt.Errorf("quarantine show: %w", err)
		}
		switch {
		case raw:
			_, err = stdout.Write(q.Data)
			return err
		case f.json:
			return printJSON(stdout, q)
		}
		return printQuarantined(stdout, q)
	case "restore":
		var data []byte
		switch file {
		case "":
		case "-":
			data, err = io.ReadAll(os.Stdin)
		default:
			data, err = os.ReadFile(file)
		}
		if err != nil {
			return fmt.Errorf("quarantine restore: setting -file: %w", err)
		}
		q, err := src.Restore(ctx, id, data)
		if err != nil {
			return fmt.Errorf("quarantine restore: %w", err)
		}
		if f.json {
			return printJSON(stdout, map[string]any{"restored": q})
		}
		how := "as stored"
		if data != nil {
			how = "mended"
		}
		where := "the usage log: it is folded, sealed and reported like any other entry"
		if q.Source == marketplace.QuarantineInbox {
			where = "the inbox: the lifecycle engine applies it"
		}
		fmt.Fprintf(stdout, "restored quarantined row %d (%s, %s) %s, %d bytes: it is back in %s\n", q.ID, q.Source, q.Ref, how, len(q.Data), where)
		return nil
	case "discard":
		q, err := src.Discard(ctx, id)
		if err != nil {
			return fmt.Errorf("quarantine discard: %w", err)
		}
		switch {
		case raw:
			_, err = stdout.Write(q.Data)
			return err
		case f.json:
			return printJSON(stdout, map[string]any{"discarded": q})
		}
		never := "its usage is never billed"
		if q.Source == marketplace.QuarantineInbox {
			never = "its notification is never applied"
		}
		fmt.Fprintf(stdout, "discarded quarantined row %d (%s, %s): it left the quarantine for good, %s\n\n", q.ID, q.Source, q.Ref, never)
		// The store no longer has the row: what is printed is its last
		// copy, so the data goes with it.
		return printQuarantinedRow(stdout, q, "\nthe daemon keeps no copy of it: the data above is the last one\n")
	}
	rows, counts, err := src.Quarantined(ctx)
	if err != nil {
		return fmt.Errorf("quarantine list: %w", err)
	}
	if rows == nil {
		rows = []quarantinedView{}
	}
	if f.json {
		return printJSON(stdout, map[string]any{"quarantined": rows, "counts": counts})
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSOURCE\tWHERE\tSIZE\tQUARANTINED (UTC)\tREASON")
	for _, q := range rows {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", q.ID, q.Source, q.Ref, q.Size, q.At.UTC().Format(time.DateTime), q.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d quarantined (usage_log %d, inbox %d)\n", len(rows), counts[marketplace.QuarantineUsageLog], counts[marketplace.QuarantineInbox])
	if len(rows) > 0 {
		fmt.Fprintln(stdout, "see one: marketplaced quarantine show -id ID; put it back once mended: marketplaced quarantine restore -id ID [-file MENDED]; "+
			"give up on one: marketplaced quarantine discard -id ID")
	}
	return nil
}

// printQuarantined prints a row's fields, then its data: an inbox row's
// columns as JSON (what an operator mends), anything else as a hex dump.
func printQuarantined(w io.Writer, q quarantinedView) error {
	return printQuarantinedRow(w, q, fmt.Sprintf("\nto mend it: marketplaced quarantine show -id %d -raw > row; edit row; marketplaced quarantine restore -id %d -file row\n", q.ID, q.ID))
}

// printQuarantinedRow is printQuarantined with what to print after the
// data.
func printQuarantinedRow(w io.Writer, q quarantinedView, after string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, kv := range [][2]string{{"id", strconv.FormatInt(q.ID, 10)}, {"source", q.Source}, {"where", q.Ref},
		{"quarantined", q.At.UTC().Format(time.RFC3339)}, {"reason", q.Reason}, {"size", strconv.Itoa(len(q.Data)) + " bytes"}} {
		fmt.Fprintf(tw, "%s\t%s\n", kv[0], kv[1])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var b bytes.Buffer
	if q.InboxRow != nil {
		fmt.Fprintln(&b, "\nthe inbox row (its columns as text, times in unix milliseconds):")
		js, err := json.MarshalIndent(q.InboxRow, "", "  ")
		if err != nil {
			return err
		}
		b.Write(js)
		b.WriteByte('\n')
	} else {
		fmt.Fprintln(&b, "\ndata:")
		b.WriteString(hex.Dump(q.Data))
	}
	b.WriteString(after)
	_, err := w.Write(b.Bytes())
	return err
}
