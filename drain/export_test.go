package drain

import "time"

// SetNewConnGrace sets how long a connection that sent nothing may stay
// open in a drain when it cannot be handed over. Only a test's server
// process calls it, before serving.
func SetNewConnGrace(d time.Duration) { newConnGrace = d }
