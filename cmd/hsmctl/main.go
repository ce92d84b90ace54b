// Command hsmctl is the command-line client of hsmbroker: keys, aliases,
// cryptographic operations and envelope encryption of files. Run
// `hsmctl --help` for the commands.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
