//go:build !linux

package l7clients

import "syscall"

// childAttr is nil where the parent-death signal does not exist.
func childAttr() *syscall.SysProcAttr { return nil }
