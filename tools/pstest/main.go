// Command pstest runs Google's in-memory fake Pub/Sub server
// (cloud.google.com/go/pubsub/v2/pstest) as a standalone process so the
// project's Python tests can point PUBSUB_EMULATOR_HOST at it.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"cloud.google.com/go/pubsub/v2/pstest"
)

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on (keep it loopback)")
	port := flag.Int("port", 0, "port to listen on; 0 picks a free one")
	flag.Parse()

	// Install the handler first so a signal sent right after the address
	// line appears still gets a clean shutdown.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// NewServerWithAddress listens and starts serving before it returns
	// (it panics if the address cannot be bound). srv.Addr is the resolved
	// listener address, so port 0 shows up as the real port.
	srv := pstest.NewServerWithAddress(net.JoinHostPort(*host, strconv.Itoa(*port)))

	// The one line a test harness waits for. os.Stdout is unbuffered in Go,
	// so the line is visible to the parent as soon as Println returns.
	fmt.Println("PSTEST_ADDR=" + srv.Addr)

	<-ctx.Done()

	if err := srv.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "pstest: close:", err)
		os.Exit(1)
	}
}
