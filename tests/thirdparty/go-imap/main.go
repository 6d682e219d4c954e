// go-imap v2 driver for `mailtls certify --command`: log in and select INBOX, as the library's README shows.
//
//	goimap HOST PORT SERVER_NAME CA_FILE PROTOCOL MODE USER PASSWORD ADDRESS
//
// Implicit cells use imapclient.DialTLS; every other cell imapclient.DialStartTLS, which never goes on
// without STARTTLS (DialInsecure is the library's explicit opt-out, not used here). The tls.Config trusts only
// the session CA and checks SERVER_NAME. Exit 0 after LOGIN, SELECT INBOX and LOGOUT; otherwise the
// library's own error text on stderr, exit 1.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
)

func main() {
	if len(os.Args) != 10 {
		fmt.Fprintln(os.Stderr, "usage: goimap HOST PORT SERVER_NAME CA_FILE PROTOCOL MODE USER PASSWORD ADDRESS")
		os.Exit(2)
	}
	if err := session(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func session(a []string) error {
	host, port, serverName, caFile, protocol, mode, user, password :=
		a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]
	if protocol != "imap" {
		return fmt.Errorf("go-imap speaks IMAP: protocol %s is not supported", protocol)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("no certificate in %s", caFile)
	}
	options := &imapclient.Options{
		TLSConfig: &tls.Config{RootCAs: roots, ServerName: serverName},
		Dialer:    &net.Dialer{Timeout: 20 * time.Second},
	}
	addr := net.JoinHostPort(host, port)
	var c *imapclient.Client
	if mode == "implicit" {
		c, err = imapclient.DialTLS(addr, options)
	} else {
		c, err = imapclient.DialStartTLS(addr, options)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	if err = c.Login(user, password).Wait(); err != nil {
		return err
	}
	box, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		return err
	}
	fmt.Printf("INBOX: %d messages\n", box.NumMessages)
	return c.Logout().Wait()
}
