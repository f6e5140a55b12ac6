/*
 * A program written for the original libtcpcrypt: it uses only
 * tcpcrypt_getsockopt with TCP_CRYPT_SESSID / TCP_CRYPT_ENABLE and MAX_SS.
 *
 * usage: old_getsockopt HOST PORT [hold]
 * Connects, prints what the old call says, and with "hold" keeps the
 * connection open until the server closes it (so the server side can look
 * the same connection up).
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <tcpcrypt/tcpcrypt.h>

int main(int argc, char **argv)
{
	struct addrinfo hints, *res;
	unsigned char small[MAX_SS], buf[256];
	unsigned int len, i;
	int s, rc, enabled;

	if (argc < 3) {
		fprintf(stderr, "usage: %s HOST PORT [hold]\n", argv[0]);
		return 1;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(argv[1], argv[2], &hints, &res) != 0) {
		fprintf(stderr, "getaddrinfo failed\n");
		return 1;
	}
	s = socket(res->ai_family, SOCK_STREAM, 0);
	if (s == -1 || connect(s, res->ai_addr, res->ai_addrlen) == -1) {
		perror("connect");
		return 1;
	}
	freeaddrinfo(res);

	len = sizeof(small);
	rc = tcpcrypt_getsockopt(s, IPPROTO_TCP, TCP_CRYPT_SESSID, small, &len);
	printf("small rc=%d errno=%d optlen=%u\n", rc, rc ? errno : 0, len);

	len = sizeof(buf);
	if (tcpcrypt_getsockopt(s, IPPROTO_TCP, TCP_CRYPT_SESSID, buf, &len) == 0) {
		printf("sessid ");
		for (i = 0; i < len; i++)
			printf("%02x", buf[i]);
		printf("\n");
	} else {
		printf("sessid error errno=%d\n", errno);
	}

	enabled = -1;
	len = sizeof(enabled);
	if (tcpcrypt_getsockopt(s, IPPROTO_TCP, TCP_CRYPT_ENABLE, &enabled, &len) == 0)
		printf("enable %d optlen=%u\n", enabled, len);
	else
		printf("enable error errno=%d\n", errno);

	len = sizeof(buf);
	rc = tcpcrypt_getsockopt(s, IPPROTO_TCP, TCP_CRYPT_CMODE, buf, &len);
	printf("cmode rc=%d errno=%d\n", rc, rc ? errno : 0);
	fflush(stdout);

	if (argc > 3 && strcmp(argv[3], "hold") == 0) {
		struct timeval tv = { 20, 0 };
		setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		while (read(s, buf, sizeof(buf)) > 0)
			;
	}
	close(s);
	return 0;
}
