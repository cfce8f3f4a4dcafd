// Package acked tells how many bytes of a response the peer's TCP has
// acknowledged, so that billing counts what a client received rather than
// what the gateway handed to its kernel.
//
// A byte written to a socket is not a byte received: when a client stops
// reading or goes away, megabytes may still sit in the gateway's send queue
// or be in flight. A client that resumes from what it kept asks for those
// bytes again, and counting them at write time would bill them twice.
//
// # How it works
//
// [Listen] wraps a listener; each accepted connection is a [*Conn] that
// counts every byte written through it (status line, headers, framing and
// bodies) with one atomic add per write. [ConnContext], set as an
// [http.Server]'s ConnContext, puts the connection in each request's context,
// and [FromContext] gets it back in a handler. [(*Conn).Unacked] asks the
// kernel how many of the written bytes the peer has not acknowledged yet:
//
//   - Linux: TCP_INFO's tcpi_bytes_acked, taken relative to its value at
//     accept, subtracted from the written count ([SourceTCPInfo]);
//   - Linux kernels without tcpi_bytes_acked (before 4.1): the SIOCOUTQ
//     ioctl, the bytes in the send queue not acknowledged yet ([SourceOutq]);
//   - anything else (other systems, unix sockets, connections that do not
//     expose a file descriptor): nothing is known, unacked is 0 and the
//     figure is the written count ([SourceWritten]).
//
// Reading the kernel's figure is one system call: do it at checkpoints and at
// the end of a response, not per write.
//
// The figure can be read after the peer reset or closed the connection, as
// long as this side has not closed the socket. net/http closes it as soon as
// a write fails, while the handler is still running, so [Conn.Close] reads
// the figure one last time and keeps it: a settlement deferred in the handler
// gets the acknowledgements as they stood when the write failed. The kernel
// may deliver a little more after that; it is not billed.
//
// # One response on HTTP/1.x
//
// TCP delivers in order, and on an HTTP/1.x connection the response being
// written is the last thing written on it, so the unacknowledged bytes are
// the tail of that response: [Delivered] (body written minus unacked, never
// below 0) is the body bytes the peer acknowledged. Earlier responses on a
// kept-alive connection do not disturb this: both the written count and
// bytes_acked run over the whole connection, and only their difference is
// used. On HTTP/2 many streams share one connection and the unacknowledged
// tail may belong to any of them: [Exclusive] tells the two apart and
// [ForRequest] falls back to the written count there.
//
// # TLS
//
// Wrap the counting listener, not the other way round
// (tls.NewListener(acked.Listen(ln), cfg), or http.Server.ServeTLS on the
// counting listener): the counts are then in ciphertext bytes. Records add a
// few dozen bytes of overhead to the unacknowledged tail, so [Delivered] of a
// plaintext body count errs low: conservative, never billing a byte the peer
// did not acknowledge.
//
// # Behind a load balancer or reverse proxy
//
// These figures measure one TCP hop: from this process to whatever holds the
// other end of the socket. When that is the end user's device (or a balancer
// that forwards packets without ending TCP, such as an L4 balancer in
// pass-through or direct-server-return mode), "acknowledged" means the
// user's kernel has the bytes. When the peer is a proxy that ends TCP (an L7
// load balancer, nginx, a CDN), "acknowledged" means that proxy has them:
// it may buffer a large part of a response, or all of it (nginx's
// proxy_buffering spills to temporary files), and keep sending after the user
// has left, so delivered approaches written and the figures no longer tell
// what the user received. For metering that holds in that setting, the proxy
// must stream without buffering (nginx: proxy_buffering off), and it should
// speak HTTP/1.1 to this process, since a proxy that multiplexes requests over
// HTTP/2 makes [Exclusive] false and the figures fall back to the written
// count.
package acked
