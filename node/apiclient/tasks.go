package apiclient

import (
	"context"

	"connectrpc.com/connect"

	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

// Run runs a task on the peer and calls onEvent for every event before the
// result (start, output chunks, progress), in order. Cancelling ctx kills
// the task. A detached run returns a nil result once the task is submitted
// (its id came with the started event).
func (c *Client) Run(ctx context.Context, req *apiv1.RunRequest, onEvent func(*apiv1.RunEvent)) (*apiv1.TaskResult, error) {
	stream, err := c.task.Run(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, c.wrap("run", err)
	}
	defer stream.Close()
	for stream.Receive() {
		ev := stream.Msg()
		if r, ok := ev.GetEvent().(*apiv1.RunEvent_Result); ok {
			return r.Result, nil
		}
		if onEvent != nil {
			onEvent(ev)
		}
	}
	if req.GetDetach() && stream.Err() == nil {
		return nil, nil
	}
	return nil, c.streamEnd("run", stream.Err())
}

// ListTasks lists the tasks the peer coordinates, newest first.
func (c *Client) ListTasks(ctx context.Context) ([]*apiv1.TaskInfo, error) {
	resp, err := c.task.ListTasks(ctx, connect.NewRequest(&apiv1.ListTasksRequest{}))
	if err != nil {
		return nil, c.wrap("tasks", err)
	}
	return resp.Msg.GetTasks(), nil
}

// GetTask returns a task's state and, once it has ended, its result.
func (c *Client) GetTask(ctx context.Context, id string) (*apiv1.TaskInfo, error) {
	resp, err := c.task.GetTask(ctx, connect.NewRequest(&apiv1.GetTaskRequest{TaskId: id}))
	if err != nil {
		return nil, c.wrap("result", err)
	}
	return resp.Msg.GetTask(), nil
}

// OutputMissing is how many bytes of a task's output, as its result
// counts them, a client did not receive, given how many it got of stdout
// and stderr. More on one stream never makes up for less on the other.
func OutputMissing(res *apiv1.TaskResult, stdout, stderr uint64) uint64 {
	var missing uint64
	for _, s := range []struct{ want, got uint64 }{{res.GetStdoutBytes(), stdout}, {res.GetStderrBytes(), stderr}} {
		if s.want > s.got {
			missing += s.want - s.got
		}
	}
	return missing
}

// CancelTask kills a task wherever it runs.
func (c *Client) CancelTask(ctx context.Context, id string) error {
	_, err := c.Cancel(ctx, id)
	return err
}

// Cancel kills a task wherever it runs and says how: queued when the task
// is lost and the cancel waits for its executor to come back.
func (c *Client) Cancel(ctx context.Context, id string) (*apiv1.CancelTaskResponse, error) {
	resp, err := c.task.Cancel(ctx, connect.NewRequest(&apiv1.CancelTaskRequest{TaskId: id}))
	if err != nil {
		return nil, c.wrap("cancel", err)
	}
	return resp.Msg, nil
}

// Logs calls fn for each kept chunk of a task's output, then, with follow,
// for the rest until the task has ended.
func (c *Client) Logs(ctx context.Context, id string, follow bool, fn func(*apiv1.OutputChunk)) error {
	return c.LogsFrom(ctx, id, "", 0, follow, fn)
}

// LogsFrom is Logs of one stream ("stdout" or "stderr"; "" for both) from
// sequence number from on (0 or 1: the start; needs a stream).
func (c *Client) LogsFrom(ctx context.Context, id, streamName string, from uint64, follow bool, fn func(*apiv1.OutputChunk)) error {
	stream, err := c.task.Logs(ctx, connect.NewRequest(&apiv1.LogsRequest{TaskId: id, Follow: follow, Stream: streamName, FromSeq: from}))
	if err != nil {
		return c.wrap("logs", err)
	}
	defer stream.Close()
	for stream.Receive() {
		fn(stream.Msg())
	}
	if err := stream.Err(); err != nil {
		return c.wrap("logs", err)
	}
	return nil
}

// ImageImport imports the OCI or docker-archive tarball at the absolute path
// p; name names an image the archive leaves unnamed.
func (c *Client) ImageImport(ctx context.Context, p, name string) ([]*apiv1.Image, error) {
	resp, err := c.image.Import(ctx, connect.NewRequest(&apiv1.ImportImageRequest{Path: p, Name: name}))
	if err != nil {
		return nil, c.wrap("image import", err)
	}
	return resp.Msg.GetImages(), nil
}

// ImagePull pulls ref from its registry.
func (c *Client) ImagePull(ctx context.Context, ref string, progress func(*apiv1.Progress)) (*apiv1.Image, error) {
	stream, err := c.image.Pull(ctx, connect.NewRequest(&apiv1.PullImageRequest{Ref: ref}))
	if err != nil {
		return nil, c.wrap("image pull", err)
	}
	defer stream.Close()
	for stream.Receive() {
		switch ev := stream.Msg().GetEvent().(type) {
		case *apiv1.PullImageEvent_Progress:
			if progress != nil {
				progress(ev.Progress)
			}
		case *apiv1.PullImageEvent_Image:
			return ev.Image, nil
		}
	}
	return nil, c.streamEnd("image pull", stream.Err())
}

// ImageList lists the peer's images.
func (c *Client) ImageList(ctx context.Context) ([]*apiv1.Image, error) {
	resp, err := c.image.List(ctx, connect.NewRequest(&apiv1.ListImagesRequest{}))
	if err != nil {
		return nil, c.wrap("image ls", err)
	}
	return resp.Msg.GetImages(), nil
}

// ImageRemove removes an image by name.
func (c *Client) ImageRemove(ctx context.Context, name string) error {
	if _, err := c.image.Remove(ctx, connect.NewRequest(&apiv1.RemoveImageRequest{Name: name})); err != nil {
		return c.wrap("image rm", err)
	}
	return nil
}
