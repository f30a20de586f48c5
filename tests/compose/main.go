// Command compose-check loads a Compose file the way `docker compose` does (compose-go, the
// library Compose itself uses) and validates it against the Compose specification's JSON schema,
// without a Docker engine.
//
//	go -C tests/compose run . ../../docker-compose.yml    (from the repository root)
//
// On success it prints the file's service names, one a line, sorted. On an invalid file it prints
// the error on stderr and exits with status 1.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/sirupsen/logrus"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-check COMPOSE_FILE")
		os.Exit(2)
	}
	names, err := check(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "invalid compose file %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	for _, name := range names {
		fmt.Println(name)
	}
}

func check(path string) ([]string, error) {
	file, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(file)
	// A warning (an unset variable, the obsolete `version:`) is a mistake in a file we ship.
	warnings := &warningHook{}
	logrus.SetOutput(io.Discard)
	logrus.AddHook(warnings)

	details := types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: file}},
		// No host environment and no .env file: the result must not depend on who runs the check.
		// Interpolation stays on, so a malformed ${...} or a required ${VAR:?} is still an error.
		Environment: types.Mapping{},
	}
	project, err := loader.LoadWithContext(context.Background(), details, func(o *loader.Options) {
		// Like `docker compose`: the directory names the project unless the file has `name:`.
		o.SetProjectName(loader.NormalizeProjectName(filepath.Base(dir)), false)
		// env_file/label_file contents are the user's (often git-ignored); their absence is no error here.
		o.SkipResolveEnvironment = true
		o.SkipResolveLabels = true
	})
	if err != nil {
		return nil, err
	}
	if len(warnings.messages) > 0 {
		return nil, fmt.Errorf("%s", warnings.messages[0])
	}
	names := project.ServiceNames()
	sort.Strings(names)
	return names, nil
}

type warningHook struct{ messages []string }

func (h *warningHook) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}
}

func (h *warningHook) Fire(e *logrus.Entry) error {
	h.messages = append(h.messages, e.Message)
	return nil
}
