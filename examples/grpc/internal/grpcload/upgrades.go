package grpcload

import "time"

// Upgrades upgrades s n times under whatever load runs. pace is called
// before each upgrade and after the last one: it returns once the current
// generation has served enough load, so that every generation takes part
// and the last drain happens under load too.
func Upgrades(s *Server, n int, timeout time.Duration, pace func() error) error {
	for range n {
		if err := pace(); err != nil {
			return err
		}
		if err := s.Upgrade(timeout); err != nil {
			return err
		}
	}
	return pace()
}
