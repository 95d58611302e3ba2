//go:build unix

package molt_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/moltgo/molt"
)

// A deploy loop or a flapping config watcher must not pile up old
// generations: with MaxDraining, an upgrade while that many older
// generations still drain is refused at once and the service goes on;
// DrainTimeout ends a generation still draining ten minutes after its
// upgrade. (This generation 1 has no older generations, and is not
// ready: its Upgrade says so.)
func ExampleOptions_maxDraining() {
	upg, err := molt.New(molt.Options{
		MaxDraining:  2,                // the default: 0 means 2, a negative value no limit
		DrainTimeout: 10 * time.Minute, // the default 0: the application's drain decides
	})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()

	err = upg.Upgrade(context.Background())
	switch {
	case errors.Is(err, molt.ErrTooManyDraining):
		// Nothing started; err names the PIDs. Try again later.
		fmt.Println("refused; still draining:", upg.Stats().Draining)
	case errors.Is(err, molt.ErrNotReady):
		fmt.Println("not ready yet")
	case err != nil:
		fmt.Println("upgrade failed; serving on:", err)
	default:
		fmt.Println("a successor serves; drain and exit")
	}
	fmt.Println("older generations draining:", len(upg.Stats().Draining))
	// Output:
	// not ready yet
	// older generations draining: 0
}
