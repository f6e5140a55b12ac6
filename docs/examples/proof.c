/* proof.c: print this connection's session ID and a password proof bound
 * to it. Build: cc proof.c $(pkg-config --cflags --libs tcpcrypt) -lcrypto */
#include <stdio.h>
#include <string.h>
#include <netdb.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <openssl/hmac.h>
#include <tcpcrypt/tcpcrypt.h>

int main(int argc, char **argv)
{
	const char *label = "tcpcrypt-auth-v1";
	unsigned char key[32] = { 0 };   /* the user's password-derived key */
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
	if (argc != 2 || getaddrinfo(argv[1], "80", &hints, &ai) != 0)
		return 2;
	int s = socket(ai->ai_family, SOCK_STREAM, 0);
	if (s < 0 || connect(s, ai->ai_addr, ai->ai_addrlen) != 0)
		return 2;

	/* The full interface: state, role, ID, cipher suite. */
	struct tcpcrypt_info info;
	int rc = tcpcrypt_lookup_fd(NULL, s, 1000, 500, &info);
	if (rc < 0) {
		fprintf(stderr, "tcpcryptd: %s\n", tcpcrypt_strerror(rc));
		return 1;
	}
	if (info.state != TCPCRYPT_STATE_ENCRYPTED) {
		fprintf(stderr, "not encrypted: %s\n", info.reason);
		return 1;
	}
	printf("session %s, role %c, %s, %s\n", info.sessid_hex,
	       info.role == TCPCRYPT_ROLE_A ? 'A' : 'B', info.tep_name, info.aead_name);

	/* The original libtcpcrypt call still works (33 bytes, not MAX_SS). */
	unsigned char sid[TCPCRYPT_SESSID_MAXLEN];
	unsigned int sid_len = sizeof sid;
	if (tcpcrypt_getsockopt(s, IPPROTO_TCP, TCP_CRYPT_SESSID, sid, &sid_len) != 0) {
		perror("tcpcrypt_getsockopt");
		return 1;
	}

	/* proof = HMAC-SHA256(key, label || 0 || our role || session ID) */
	unsigned char msg[64 + TCPCRYPT_SESSID_MAXLEN], mac[32];
	size_t n = strlen(label) + 1;
	memcpy(msg, label, n);
	msg[n++] = info.role == TCPCRYPT_ROLE_A ? 'A' : 'B';
	memcpy(msg + n, sid, sid_len);
	n += sid_len;
	unsigned int mac_len = sizeof mac;
	HMAC(EVP_sha256(), key, sizeof key, msg, n, mac, &mac_len);
	printf("X-Tcpcrypt-Proof: ");
	for (unsigned int i = 0; i < mac_len; i++)
		printf("%02x", mac[i]);
	printf("\n");
	/* ... send the request with this header on the same socket s ... */
	close(s);
	return 0;
}
