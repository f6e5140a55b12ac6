/*
 * A program written for the original libtcpcrypt's setter: before
 * connect(), it asks for no caching and for resumption off on its socket.
 *
 * usage: old_setsockopt
 * Prints the return value and errno of each call, then the socket's port.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include <tcpcrypt/tcpcrypt.h>

int main(void)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int one = 1, zero = 0, s, rc;

	s = socket(AF_INET, SOCK_STREAM, 0);
	if (s == -1) {
		perror("socket");
		return 1;
	}
	rc = tcpcrypt_setsockopt(s, IPPROTO_TCP, TCP_CRYPT_NOCACHE, &one, sizeof(one));
	printf("nocache rc=%d errno=%d\n", rc, rc ? errno : 0);
	rc = tcpcrypt_setsockopt(s, IPPROTO_TCP, TCP_CRYPT_RESUME, &zero, sizeof(zero));
	printf("resume rc=%d errno=%d\n", rc, rc ? errno : 0);
	if (getsockname(s, (struct sockaddr *)&sin, &len) == 0)
		printf("port %u\n", (unsigned)ntohs(sin.sin_port));
	close(s);
	return 0;
}
