package hyperdrive

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// writerLock is an exclusive flock(2) on an archive's lock file. The kernel
// drops it when the holder dies, even by kill -9, so a crash never leaves an
// archive locked. While held, the file names the holder for error messages.
type writerLock struct {
	f *os.File
}

// defaultHolder describes this process for the lock file.
func defaultHolder() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("pid %d on %s (%s) since %s", os.Getpid(), host,
		strings.Join(os.Args, " "), time.Now().Format(time.RFC3339))
}

// acquireLock takes the archive's writer lock, retrying until ctx is done.
// When ctx ends first it returns a *LockedError naming the holder.
func acquireLock(ctx context.Context, dir, holder string) (*writerLock, error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	delay := 2 * time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("hyperdrive: locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			b, _ := os.ReadFile(path)
			f.Close()
			return nil, &LockedError{Path: path, Holder: strings.TrimSpace(string(b))}
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(holder+"\n"), 0)
	}
	return &writerLock{f: f}, nil
}

func (l *writerLock) release() error {
	l.f.Truncate(0)
	syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	return l.f.Close()
}
