/*
 * An application-aware program: before connect(), it tells its peers so
 * with TCP_CRYPT_APP_SUPPORT; a value the header does not define is
 * refused; a listening socket asks for mandatory mode.
 *
 * usage: app_support
 * Prints the return value and errno of each call, then the ports.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include <tcpcrypt/tcpcrypt.h>

static unsigned port_of(int s)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	if (getsockname(s, (struct sockaddr *)&sin, &len) != 0)
		return 0;
	return ntohs(sin.sin_port);
}

int main(void)
{
	struct sockaddr_in any = { .sin_family = AF_INET };
	int on = TCP_CRYPT_APP_SUPPORT_ON, bad = 3;
	int mandatory = TCP_CRYPT_APP_SUPPORT_MANDATORY;
	int s, l, rc;

	s = socket(AF_INET, SOCK_STREAM, 0);
	l = socket(AF_INET, SOCK_STREAM, 0);
	if (s == -1 || l == -1) {
		perror("socket");
		return 1;
	}
	rc = tcpcrypt_setsockopt(s, IPPROTO_TCP, TCP_CRYPT_APP_SUPPORT, &on, sizeof(on));
	printf("on rc=%d errno=%d\n", rc, rc ? errno : 0);
	rc = tcpcrypt_setsockopt(s, IPPROTO_TCP, TCP_CRYPT_APP_SUPPORT, &bad, sizeof(bad));
	printf("bad rc=%d errno=%d\n", rc, rc ? errno : 0);
	printf("port %u\n", port_of(s));

	any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(l, (struct sockaddr *)&any, sizeof(any)) != 0 || listen(l, 1) != 0) {
		perror("listen");
		return 1;
	}
	rc = tcpcrypt_setsockopt(l, IPPROTO_TCP, TCP_CRYPT_APP_SUPPORT, &mandatory,
				 sizeof(mandatory));
	printf("mandatory rc=%d errno=%d\n", rc, rc ? errno : 0);
	printf("listen %u\n", port_of(l));
	close(s);
	close(l);
	return 0;
}
