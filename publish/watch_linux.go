package publish

import "syscall"

// statfsMagic returns the f_type statfs(2) reports for the file system
// holding dir, which Watch compares with the magic numbers of network and
// virtual file systems (see remoteFSName). f_type is a long of either width
// on Linux; the magic numbers fit in 32 bits.
func (platform) statfsMagic(dir string) (uint32, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return uint32(st.Type), nil
}
