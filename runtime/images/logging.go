package images

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	clog "github.com/containerd/log"
	"github.com/sirupsen/logrus"
)

// containerdLogger returns the logrus entry that containerd's client code
// logs through (it logs to the process's stderr by default), sending its
// lines to logger instead: warnings and errors as warnings, the rest
// ("trying next host", "apply failure, attempting cleanup") as debug.
func containerdLogger(logger *slog.Logger) *clog.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.InfoLevel)
	l.AddHook(slogHook{log: logger})
	return logrus.NewEntry(l)
}

type slogHook struct{ log *slog.Logger }

func (slogHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h slogHook) Fire(e *logrus.Entry) error {
	level := slog.LevelDebug
	if e.Level <= logrus.WarnLevel {
		level = slog.LevelWarn
	}
	ctx := e.Context
	if ctx == nil {
		ctx = context.Background()
	}
	if !h.log.Enabled(ctx, level) {
		return nil
	}
	attrs := make([]any, 0, 2*len(e.Data)+2)
	attrs = append(attrs, "source", "containerd")
	for k, v := range e.Data {
		if err, ok := v.(error); ok {
			v = err.Error()
		}
		attrs = append(attrs, k, fmt.Sprint(v))
	}
	h.log.Log(ctx, level, e.Message, attrs...)
	return nil
}
