package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func configCmd(e env) *cobra.Command {
	c := &cobra.Command{Use: "config", Short: "Work with configuration files"}
	var path string
	check := &cobra.Command{
		Use:   "check",
		Short: "Validate a configuration file and report every problem at once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(path, e.getenv)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "config ok: listen %s, link mode %s, metering %s, %d plan(s)\n",
				cfg.Listen, cfg.Links.Mode, cfg.Metering.Mode, len(cfg.Plans))
			for _, n := range cfg.Notes() {
				fmt.Fprintf(e.stdout, "note: %s\n", n)
			}
			return nil
		},
	}
	check.Flags().StringVar(&path, "config", "", "configuration file (YAML)")
	_ = check.MarkFlagRequired("config")
	c.AddCommand(check)
	return c
}
