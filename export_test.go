package molt

// SetTestHookReadySent sets the hook Ready calls right after READY was sent
// (see testHookReadySent), for the successor roles of the tests.
func SetTestHookReadySent(f func()) { testHookReadySent = f }

// SetTestHookBatchSent sets the hook sendInventory calls after each batch
// (see testHookBatchSent).
func SetTestHookBatchSent(f func(sent, left int)) { testHookBatchSent = f }

// SendBatch is how many entries an upgrade sends at a time.
const SendBatch = sendBatch

// SetTestHookResumed sets the hook a parent calls when it accepts again at
// a rollback (see testHookResumed).
func SetTestHookResumed(f func()) { testHookResumed = f }
