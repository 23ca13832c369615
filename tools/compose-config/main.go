// Command compose-config loads and validates a Compose file with compose-go, the library behind
// `docker compose config`, and prints the normalised project as JSON. It lets the tests validate
// docker-compose.yml on machines that have no Docker engine or Compose plugin.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-config <compose-file>")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions([]string{os.Args[1]}, cli.WithOsEnv, cli.WithDotEnv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "compose-config:", err)
		os.Exit(1)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "compose-config: invalid compose file:", err)
		os.Exit(1)
	}
	normalised, err := project.MarshalJSON()
	if err != nil {
		fmt.Fprintln(os.Stderr, "compose-config:", err)
		os.Exit(1)
	}
	fmt.Println(string(normalised))
}
