package molt

// SetTestHookReadySent sets the hook Ready calls right after READY was sent
// (see testHookReadySent), for the successor roles of the tests.
func SetTestHookReadySent(f func()) { testHookReadySent = f }
