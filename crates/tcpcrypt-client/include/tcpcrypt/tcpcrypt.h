/*
 * tcpcrypt.h: ask tcpcryptd about a TCP connection (libtcpcrypt).
 *
 * Link with -ltcpcrypt (pkg-config --cflags --libs tcpcrypt).
 *
 * Every call asks tcpcryptd over its control socket and returns within its
 * time limit, also when the daemon is not running or does not answer. No
 * call exits, aborts, raises SIGPIPE or keeps global state except
 * tcpcrypt_setparam's path. All calls are thread-safe.
 *
 * Control socket: the path argument if not NULL, else the environment
 * variable TCPCRYPT_CONTROL, else /run/tcpcrypt/control.sock.
 *
 * Session IDs (RFC 8548 section 3.4) are 33 bytes long: the TEP byte host B
 * sent, then 32 bytes. That is longer than the 32-byte MAX_SS of the
 * original libtcpcrypt, so a buffer sized MAX_SS is too small for
 * TCP_CRYPT_SESSID: use TCPCRYPT_SESSID_MAXLEN.
 */
#ifndef TCPCRYPT_TCPCRYPT_H
#define TCPCRYPT_TCPCRYPT_H

#include <stddef.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- The original libtcpcrypt interface (source-compatible) ---------- */

/* Option names, values as in the original header. tcpcrypt_getsockopt
 * supports TCP_CRYPT_ENABLE and TCP_CRYPT_SESSID, tcpcrypt_setsockopt
 * TCP_CRYPT_NOCACHE, TCP_CRYPT_RESUME and TCP_CRYPT_APP_SUPPORT; the others
 * fail with errno ENOPROTOOPT. */
enum {
	TCP_CRYPT_ENABLE      = 0,
	TCP_CRYPT_CMODE       = 1,
	TCP_CRYPT_SESSID      = 2,
	TCP_CRYPT_RSA_KEY     = 3,
	TCP_CRYPT_NOCACHE     = 4,
	TCP_CRYPT_APP_SUPPORT = 15,
	TCP_CRYPT_RESUME      = 16
};

/* Values of TCP_CRYPT_APP_SUPPORT for tcpcrypt_setsockopt. */
enum {
	TCP_CRYPT_APP_SUPPORT_OFF       = 0,
	TCP_CRYPT_APP_SUPPORT_ON        = 1,
	TCP_CRYPT_APP_SUPPORT_MANDATORY = 2
};

enum {
	TCP_CRYPT_CMODE_DEFAULT   = 0,
	TCP_CRYPT_CMODE_ALWAYS    = 1,
	TCP_CRYPT_CMODE_ALWAYS_NK = 2
};

/* The original maximum session ID length. RFC 8548 IDs are 33 bytes. */
#ifndef MAX_SS
#define MAX_SS 32
#endif

/* tcpcrypt_setparam parameters. */
enum {
	TCPCRYPT_PARAM_CTLPATH = 0
};

/*
 * Asks about connected TCP socket s (IPv4 or IPv6). level must be
 * IPPROTO_TCP. Waits up to 500 ms for a handshake still in progress and
 * returns within 1 s in all cases.
 *
 * TCP_CRYPT_SESSID: copies the raw session ID (33 bytes) to optval and
 *   stores its length in *optlen.
 * TCP_CRYPT_ENABLE: stores an int in optval, 1 if the connection is
 *   encrypted with tcpcrypt, 0 if not (plain, unknown to the daemon, or
 *   handshake not finished), and sizeof(int) in *optlen.
 *
 * Returns 0, or -1 with errno set:
 *   ERANGE        *optlen too small; the needed length is stored in *optlen
 *   ENODATA       (TCP_CRYPT_SESSID) connection is plain or unknown to tcpcryptd
 *   EBUSY         (TCP_CRYPT_SESSID) handshake still in progress
 *   ENOPROTOOPT   level is not IPPROTO_TCP, or option not supported
 *   EFAULT        optval or optlen is NULL
 *   and any code listed for tcpcrypt_lookup_fd below.
 */
int tcpcrypt_getsockopt(int s, int level, int optname, void *optval,
			unsigned int *optlen);

/*
 * Sets the RFC 8548 section 3.5 controls, or the RFC 8547 section 4.2
 * application-aware bit, for TCP socket s's connections. level must be
 * IPPROTO_TCP; optval points to an int, optlen is at least sizeof(int).
 *
 * TCP_CRYPT_NOCACHE: nonzero keeps no secret from the session, so no later
 *   connection can resume it; 0 caches as usual (the default).
 * TCP_CRYPT_RESUME: 0 turns resumption off, so the connection neither
 *   offers nor accepts one and runs a fresh key exchange; nonzero allows it
 *   again (the default). (Our mapping: the original header defined the
 *   name; here it is the on/off switch for resumption on this socket.)
 * TCP_CRYPT_APP_SUPPORT: the ENO "a" bit the socket sends, which the
 *   peer's application reads as peer_app_aware (struct tcpcrypt_info).
 *   A client socket sends it in its SYN, a listening socket in the SYN-ACK
 *   of every connection it accepts. It changes nothing in the encryption.
 *   TCP_CRYPT_APP_SUPPORT_OFF (0): a = 0, the default.
 *   TCP_CRYPT_APP_SUPPORT_ON (1): a = 1.
 *   TCP_CRYPT_APP_SUPPORT_MANDATORY (2): a = 1, and a peer that does not
 *     send a = 1 gets plain TCP: no tcpcrypt at all on that connection.
 *     Because that turns encryption off, tcpcryptd allows it to root only
 *     (others get EPERM).
 *   Other values fail with EINVAL. A client socket with a = 1 offers no
 *   resumption: its SYN has no room for both (a listener resumes as usual).
 *
 * tcpcryptd sees packets, not sockets, so the library registers the
 * setting for the socket's local address and port, and it must be in
 * place before the first SYN: for a client, call this before connect()
 * (a socket with no port yet is bound to a kernel-chosen port of the
 * unspecified address first, as connect() would have done); for a server,
 * after listen(), and it then applies to every connection accepted on the
 * socket's address and port until tcpcryptd restarts. A client's setting
 * applies to its next connection only, and lapses if connect() does not
 * follow within 120 s. The options combine: setting one keeps the
 * others' values. Members of tcpcryptd's control group may call this.
 *
 * Returns 0, or -1 with errno set:
 *   EISCONN       the socket is connected already (too late)
 *   EINVAL        optlen < sizeof(int), or a TCP_CRYPT_APP_SUPPORT value
 *                 other than 0, 1 or 2
 *   EFAULT        optval is NULL
 *   ENOPROTOOPT   level is not IPPROTO_TCP, or option not supported
 *   ENOSPC        tcpcryptd holds as many registrations as it will
 *   EPERM         TCP_CRYPT_APP_SUPPORT_MANDATORY asked by a user other than root
 *   and any code listed for tcpcrypt_lookup_fd below (ENOTCONN excepted).
 */
int tcpcrypt_setsockopt(int s, int level, int optname, const void *optval,
			unsigned int optlen);

/*
 * Sets the control socket path used by tcpcrypt_getsockopt and
 * tcpcrypt_setsockopt (param
 * TCPCRYPT_PARAM_CTLPATH, val a NUL-terminated path; NULL restores the
 * default). Other params are ignored.
 */
void tcpcrypt_setparam(int param, void *val);

/* ---- The full interface ----------------------------------------------- */

/* Room for a session ID in struct tcpcrypt_info. */
#define TCPCRYPT_SESSID_MAXLEN 64

/* Length of an RFC 8548 session ID. */
#define TCPCRYPT_SESSID_LEN 33

/* Time limit used when a timeout_ms argument is 0 or negative. */
#define TCPCRYPT_DEFAULT_TIMEOUT_MS 500

/* The daemon holds an answer for at most this long (wait_ms is capped). */
#define TCPCRYPT_MAX_WAIT_MS 10000

enum tcpcrypt_state {
	TCPCRYPT_STATE_UNKNOWN   = 0, /* tcpcryptd does not track the connection */
	TCPCRYPT_STATE_PLAIN     = 1, /* plain TCP; see reason */
	TCPCRYPT_STATE_PENDING   = 2, /* handshake not finished when wait_ms ran out */
	TCPCRYPT_STATE_ENCRYPTED = 3  /* tcpcrypt; all session fields are set */
};

enum tcpcrypt_role {
	TCPCRYPT_ROLE_NONE = 0,
	TCPCRYPT_ROLE_A    = 1,
	TCPCRYPT_ROLE_B    = 2
};

struct tcpcrypt_info {
	int state;                 /* enum tcpcrypt_state */
	int role;                  /* enum tcpcrypt_role: this host's role */
	unsigned int sessid_len;   /* 33 when encrypted, else 0 */
	unsigned char sessid[TCPCRYPT_SESSID_MAXLEN];
	char sessid_hex[2 * TCPCRYPT_SESSID_MAXLEN + 1]; /* lower-case, NUL-terminated */
	unsigned int tep;          /* TEP identifier byte, e.g. 0x23 */
	char tep_name[32];         /* e.g. "TCPCRYPT_ECDHE_Curve25519" */
	unsigned int aead;         /* AEAD identifier, e.g. 0x0001 */
	char aead_name[32];        /* e.g. "AEAD_AES_128_GCM" */
	int resumed;               /* 1 if keys came from a resumed session */
	int peer_app_aware;        /* the peer's ENO "a" bit */
	char reason[128];          /* plain only: why, for people (truncated) */
};

/*
 * Looks up the connection of connected TCP socket fd (IPv4, IPv6 or
 * IPv4-mapped IPv6); the library reads its addresses itself.
 *
 * control_path: NULL for $TCPCRYPT_CONTROL or the default.
 * wait_ms:      if the handshake is still in progress, how long tcpcryptd
 *               may hold the answer (0: answer at once; at most 10000).
 * timeout_ms:   limit for talking to tcpcryptd (<= 0: 500 ms). The call
 *               returns within wait_ms + timeout_ms.
 *
 * On success returns 0 and fills *info (info->state says which fields are
 * set; the rest are zero). On failure returns a negative errno value and
 * leaves *info untouched:
 *   -ENOENT        control socket missing: tcpcryptd not running
 *   -ECONNREFUSED  nothing listening on the control socket
 *   -EACCES        no permission on the control socket
 *   -ETIMEDOUT     tcpcryptd did not answer in time
 *   -EPROTO        malformed answer, or tcpcryptd rejected the request
 *   -EPROTONOSUPPORT tcpcryptd does not speak control protocol version 1
 *   -ECONNRESET, -EPIPE  tcpcryptd closed the control connection early
 *   -EIO           tcpcryptd (or this library) failed internally
 *   -ENOTSOCK      fd is not a socket
 *   -EPROTOTYPE    fd is not an IPv4/IPv6 TCP socket
 *   -ENOTCONN      the socket is not connected
 *   -EBADF         fd is not an open descriptor
 *   -EINVAL        info is NULL
 *   -ENAMETOOLONG  control path empty or longer than a Unix socket allows
 */
int tcpcrypt_lookup_fd(const char *control_path, int fd, int wait_ms,
		       int timeout_ms, struct tcpcrypt_info *info);

/*
 * Like tcpcrypt_lookup_fd, for a connection named by its addresses as seen
 * on this host (local = getsockname, remote = getpeername), each a
 * struct sockaddr_in or sockaddr_in6. -EINVAL if either is NULL, too short
 * or not AF_INET/AF_INET6.
 */
int tcpcrypt_lookup_addr(const char *control_path,
			 const struct sockaddr *local, socklen_t local_len,
			 const struct sockaddr *remote, socklen_t remote_len,
			 int wait_ms, int timeout_ms,
			 struct tcpcrypt_info *info);

/* A static description of an error code from this library (negative or
 * positive errno value). Never NULL. */
const char *tcpcrypt_strerror(int err);

/*
 * Password login to a web server with mod_tcpcrypt's AuthType tcpcrypt
 * (SCRAM-SHA-256 bound to the connection's tcpcrypt session; see
 * docs/channel-bound-auth.md). Present when libtcpcrypt is built with the
 * cargo feature "auth". Your HTTP client sends the requests, all on the
 * same keep-alive connection fd:
 *
 *   1. tcpcrypt_login_start: asks tcpcryptd for fd's session (waiting up to
 *      wait_ms for the handshake) and writes the Authorization value of the
 *      first request into authorization[len]. Returns the login state, or
 *      NULL with *err set (lookup codes as for tcpcrypt_lookup_fd, plus
 *      -ENODATA: not encrypted, -EBUSY: handshake pending, -EINVAL: bad
 *      user name, -ERANGE: buffer too small).
 *   2. The server answers 401 with a WWW-Authenticate value carrying
 *      "sid=" and "data=": pass it to tcpcrypt_login_answer, with the
 *      password; it writes the second Authorization value. 0 or -EBADMSG
 *      (no usable challenge), -EINVAL, -ERANGE.
 *   3. On 2xx, pass the Authentication-Info value (NULL if absent) to
 *      tcpcrypt_login_verify: 0 when the server proved it knows the
 *      password's verifier, else -EKEYREJECTED (do not trust the response)
 *      or -EBADMSG.
 *   4. tcpcrypt_login_free, always.
 *
 * Header values never exceed TCPCRYPT_LOGIN_HEADER_MAX bytes with the NUL.
 */
#define TCPCRYPT_LOGIN_HEADER_MAX 1024

struct tcpcrypt_login;

struct tcpcrypt_login *tcpcrypt_login_start(const char *control_path, int fd,
					    int wait_ms, const char *user,
					    char *authorization, size_t len,
					    int *err);
int tcpcrypt_login_answer(struct tcpcrypt_login *login,
			  const char *www_authenticate, const char *password,
			  char *authorization, size_t len);
int tcpcrypt_login_verify(struct tcpcrypt_login *login,
			  const char *authentication_info);
void tcpcrypt_login_free(struct tcpcrypt_login *login);

#ifdef __cplusplus
}
#endif

#endif /* TCPCRYPT_TCPCRYPT_H */
