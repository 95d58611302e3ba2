package supervise

import "log/slog"

// slogLogger is the supervisor's logger.
type slogLogger struct{ *slog.Logger }
