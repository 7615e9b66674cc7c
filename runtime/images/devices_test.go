package images

import (
	"archive/tar"
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"
)

// hostBlockDevice returns the major and minor numbers of a block device of
// this host (the first of /proc/partitions), or 8:0.
func hostBlockDevice(t testing.TB) (major, minor int64, name string) {
	t.Helper()
	f, err := os.Open("/proc/partitions")
	if err != nil {
		return 8, 0, "sda"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 4 {
			continue
		}
		ma, err1 := strconv.ParseInt(fields[0], 10, 64)
		mi, err2 := strconv.ParseInt(fields[1], 10, 64)
		if err1 == nil && err2 == nil {
			return ma, mi, fields[3]
		}
	}
	return 8, 0, "sda"
}

// TestImportedDeviceNodesUnusable checks what a device node shipped in an
// image gives a task: containerd creates it in the snapshot (see
// TestImportHostileLayers), and it must not open a host block device. This
// runs with containerd's default spec (root, default capabilities, the
// default devices cgroup rules); the executor runs tasks with less.
func TestImportedDeviceNodesUnusable(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	name := uniqueRepo(t, s, "dev") + ":v1"
	bb, err := busyboxLayer(testBusybox)
	if err != nil {
		t.Fatal(err)
	}
	major, minor, hostName := hostBlockDevice(t)
	devs, err := buildLayer([]layerFile{
		{Name: "evilblk", Mode: 0o666, Type: tar.TypeBlock, Major: major, Minor: minor},
		{Name: "evilmem", Mode: 0o666, Type: tar.TypeChar, Major: 1, Minor: 1},
		{Name: "dev/evilnull", Mode: 0o666, Type: tar.TypeChar, Major: 1, Minor: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	ti := newTestImage(t, busyboxConfig(), bb, devs)
	if _, err := s.Import(testContext(t), bytes.NewReader(ti.layout(t, named(name))), ImportOptions{}); err != nil {
		t.Fatalf("import: %v", err)
	}
	code, out := runInImage(t, s, name, "sh", "-c",
		"ls -l /evilblk /evilmem /dev/evilnull 2>&1; head -c 512 /evilblk >/dev/null && echo READ-BLOCK; head -c 16 /evilmem >/dev/null && echo READ-MEM; true")
	t.Logf("host block device %s is %d:%d; in the container (exit %d):\n%s", hostName, major, minor, code, out)
	if strings.Contains(out, "READ-BLOCK") || strings.Contains(out, "READ-MEM") {
		t.Fatal("a device node from the image opened a host device")
	}
}
