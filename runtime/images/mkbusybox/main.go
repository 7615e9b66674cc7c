// Command mkbusybox writes the OCI image layout tarball of the minimal
// busybox image that tests and the default task policy use, built from a
// static busybox binary:
//
//	go run ./runtime/images/mkbusybox -o busybox.tar [-busybox /bin/busybox] [-name cortex/busybox:test]
//	ctr -n cortex images import busybox.tar
//
// The output is reproducible: the same binary and name give the same bytes.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cortex-peer/cortex-peer/runtime/images"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkbusybox:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("mkbusybox", flag.ContinueOnError)
	out := fs.String("o", "", "output file (required; - for stdout)")
	busybox := fs.String("busybox", "/bin/busybox", "static busybox binary to put in the image")
	name := fs.String("name", "cortex/busybox:test", "image name (io.containerd.image.name annotation)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("usage: mkbusybox -o out.tar [-busybox path] [-name ref]")
	}
	if *out == "-" {
		return images.BuildBusybox(os.Stdout, *busybox, *name)
	}
	// Write beside the output and rename, so a failed build never leaves a
	// truncated tarball where make expects a good one.
	f, err := os.CreateTemp(filepath.Dir(*out), ".mkbusybox-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // fails harmlessly once renamed
	if err := images.BuildBusybox(f, *busybox, *name); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), *out)
}
