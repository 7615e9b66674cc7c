package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortex-peer/cortex-peer/node/apiclient"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

func taskInfoJSON(t *apiv1.TaskInfo) map[string]any {
	out := map[string]any{
		"task_id": t.GetTaskId(), "state": t.GetState(), "executor": t.GetExecutor(),
		"command": nonNil(t.GetCommand()), "image": t.GetImage(), "workspace": t.GetWorkspace(),
		"submitted": t.GetSubmitted().AsTime().Format(time.RFC3339Nano), "updated": t.GetUpdated().AsTime().Format(time.RFC3339Nano),
		"error": t.GetError(),
	}
	if r := t.GetResult(); r != nil {
		out["result"] = taskResultJSON(r)
	}
	return out
}

func newTasksCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "tasks",
		Short: "List the tasks this peer coordinates and their states",
		Long: `tasks lists the tasks submitted through this peer, newest first, with the
peer each runs on and its state: submitted, fetching, running, exited,
delivered (ended, result here), cancelled (cancelled, result here, exit 130),
lost (its executor went away) or failed.`,
		Args: NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tasks, err := withAPI(cmd, g, func(ctx context.Context, c *apiclient.Client) ([]*apiv1.TaskInfo, error) { return c.ListTasks(ctx) })
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.JSON {
				list := make([]map[string]any, 0, len(tasks))
				for _, t := range tasks {
					list = append(list, taskInfoJSON(t))
				}
				return PrintJSON(out, list)
			}
			tw := newTable(out)
			fmt.Fprintln(tw, "TASK\tSTATE\tEXIT\tPEER\tSUBMITTED\tCOMMAND")
			now := time.Now()
			for _, t := range tasks {
				exit := "-"
				if r := t.GetResult(); r != nil {
					exit = fmt.Sprint(taskExitCode(r))
				}
				exec := t.GetExecutor()
				if len(exec) > 12 {
					exec = "…" + exec[len(exec)-10:]
				}
				cmdline := strings.Join(t.GetCommand(), " ")
				if len(cmdline) > 60 {
					cmdline = cmdline[:57] + "..."
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.GetTaskId(), t.GetState(), exit, exec,
					formatAgo(t.GetSubmitted().AsTime(), now), cmdline)
			}
			return tw.Flush()
		},
	}
}

func newLogsCmd(g *Globals) *cobra.Command {
	var follow bool
	var streamName string
	var from uint64
	cmd := &cobra.Command{
		Use:   "logs [-f] TASK",
		Short: "Print a task's output: what is kept, then (-f) the rest as it comes",
		Long: `logs prints the output of a task, stdout to stdout and stderr to stderr.
A task this peer coordinates is read from its own copy; any other task is
found on the peer of the mesh that runs it (which shows it to peers it
would run tasks for), so logs works from every peer. With -f it keeps going
until the task has ended, with no line missing or repeated. --stream picks
one stream, and --from starts it at a chunk's sequence number (as --json
shows them), to page through a long log. With --json each chunk is one
JSON line.`,
		Args: exactArgs(1, "TASK"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
				return c.LogsFrom(ctx, args[0], streamName, from, follow, func(ch *apiv1.OutputChunk) {
					if g.JSON {
						_ = PrintJSONLine(stdout, map[string]any{"stream": ch.GetStream(), "seq": ch.GetSeq(),
							"time": ch.GetTime().AsTime().Format(time.RFC3339Nano), "data": string(ch.GetData())})
						return
					}
					var w io.Writer = stdout
					if ch.GetStream() == "stderr" {
						w = stderr
					}
					_, _ = w.Write(ch.GetData())
				})
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the task has ended")
	cmd.Flags().StringVar(&streamName, "stream", "", "only this stream: stdout or stderr")
	cmd.Flags().Uint64Var(&from, "from", 0, "start at this chunk sequence number of --stream")
	return cmd
}

func newCancelCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel TASK",
		Short: "Kill a task wherever it runs",
		Args:  exactArgs(1, "TASK"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd, g, func(ctx context.Context, c *apiclient.Client) error {
				resp, err := c.Cancel(ctx, args[0])
				if err != nil {
					return err
				}
				if g.JSON {
					return PrintJSON(cmd.OutOrStdout(), map[string]any{"task_id": args[0], "cancelled": !resp.GetQueued(), "queued": resp.GetQueued()})
				}
				if resp.GetQueued() {
					fmt.Fprintf(cmd.ErrOrStderr(), "task %s is lost (its executor is out of reach): the cancel is recorded and delivered when the executor is back\n", args[0])
					return nil
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "task %s: cancel sent\n", args[0])
				return nil
			})
		},
	}
}

func newResultCmd(g *Globals) *cobra.Command {
	return &cobra.Command{
		Use:   "result TASK",
		Short: "Show how a task ended: exit, usage, result root, merge report",
		Long: `result shows a task's state and, once it has ended, its exit code, usage,
workspace roots and merge report. For a task still running elsewhere, the
executor is asked, so a result that could not be delivered is picked up.
The exit status is the task's (124 timed out, 130 cancelled), or 1 while it
has no result.`,
		Args: exactArgs(1, "TASK"),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := withAPI(cmd, g, func(ctx context.Context, c *apiclient.Client) (*apiv1.TaskInfo, error) {
				return c.GetTask(ctx, args[0])
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.JSON {
				if err := PrintJSON(out, taskInfoJSON(t)); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(out, "task:      %s\nstate:     %s\nexecutor:  %s\ncommand:   %s\n", t.GetTaskId(), t.GetState(), t.GetExecutor(), strings.Join(t.GetCommand(), " "))
				if t.GetError() != "" {
					fmt.Fprintf(out, "error:     %s\n", t.GetError())
				}
				if r := t.GetResult(); r != nil {
					fmt.Fprintf(out, "exit:      %d\nduration:  %.2fs\ncpu:       %.2fs\nmemory:    %s peak\noutput:    %s stdout, %s stderr\n",
						taskExitCode(r), r.GetDurationSeconds(), r.GetCpuSeconds(), formatBytes(r.GetPeakMemoryBytes()),
						formatBytes(r.GetStdoutBytes()), formatBytes(r.GetStderrBytes()))
					if r.GetBaseRoot() != "" {
						fmt.Fprintf(out, "base:      %s\nresult:    %s\n", r.GetBaseRoot(), r.GetResultRoot())
					}
					if rep := r.GetMerge(); rep != nil {
						printMergeReport(out, rep)
					}
				}
			}
			r := t.GetResult()
			if r == nil {
				switch t.GetState() {
				case "failed", "lost":
					fmt.Fprintf(cmd.ErrOrStderr(), "cortex-peer: task %s %s without a result\n", t.GetTaskId(), t.GetState())
				default:
					fmt.Fprintf(cmd.ErrOrStderr(), "cortex-peer: task %s has not ended (%s): no result yet; `cortex-peer logs -f %s` follows it to its end\n",
						t.GetTaskId(), t.GetState(), t.GetTaskId())
				}
				return exitStatus{ExitError}
			}
			if code := taskExitCode(r); code != 0 {
				return exitStatus{code}
			}
			return nil
		},
	}
}
