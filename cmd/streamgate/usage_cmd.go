package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/streamgate/streamgate/usage"
)

var periodRE = regexp.MustCompile(`^\d{4}-(0[1-9]|1[0-2])$`)

func usageCmd(e env) *cobra.Command {
	c := &cobra.Command{Use: "usage", Short: "Read the usage ledger"}
	var path, period, format string
	report := &cobra.Command{
		Use:   "report",
		Short: "Per user and in total: downloads, billed minutes and Stream minutes in a month",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !periodRE.MatchString(period) {
				return fmt.Errorf("--period %q: want YYYY-MM", period)
			}
			if format != "csv" && format != "json" {
				return fmt.Errorf("--format %q: want csv or json", format)
			}
			cfg, err := loadConfig(path, e.getenv)
			if err != nil {
				return err
			}
			l, err := openLedger(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer l.Close()
			rows, err := l.Report(cmd.Context(), period)
			if err != nil {
				return err
			}
			total := usage.ReportRow{}
			for _, r := range rows {
				total.Downloads += r.Downloads
				total.Deliveries += r.Deliveries
				total.Minutes += r.Minutes
				total.StreamMinutes += r.StreamMinutes
				total.Bytes += r.Bytes
				total.StreamBytes += r.StreamBytes
			}
			if format == "json" {
				if rows == nil {
					rows = []usage.ReportRow{}
				}
				return json.NewEncoder(e.stdout).Encode(map[string]any{"period": period, "users": rows, "total": total})
			}
			// One line per user, then the total on a line with no user.
			w := csv.NewWriter(e.stdout)
			_ = w.Write([]string{"period", "user", "downloads", "deliveries", "minutes", "stream_minutes", "bytes", "stream_bytes"})
			for _, r := range append(rows, total) {
				_ = w.Write([]string{period, r.User, strconv.FormatInt(r.Downloads, 10), strconv.FormatInt(r.Deliveries, 10),
					strconv.FormatFloat(r.Minutes, 'f', 6, 64), strconv.FormatFloat(r.StreamMinutes, 'f', 6, 64),
					strconv.FormatInt(r.Bytes, 10), strconv.FormatInt(r.StreamBytes, 10)})
			}
			w.Flush()
			return w.Error()
		},
	}
	report.Flags().StringVar(&path, "config", "", "configuration file (YAML)")
	report.Flags().StringVar(&period, "period", "", "the month, YYYY-MM (UTC)")
	report.Flags().StringVar(&format, "format", "csv", "csv or json")
	_ = report.MarkFlagRequired("config")
	_ = report.MarkFlagRequired("period")
	c.AddCommand(report)
	return c
}
