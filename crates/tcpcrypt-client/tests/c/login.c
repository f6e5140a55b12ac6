/* A password login to AuthType tcpcrypt with libtcpcrypt's tcpcrypt_login_*
 * functions and a hand-made HTTP/1.1 client, as a C application would do
 * it. Usage: login CONTROL_SOCKET IPV4 PORT PATH USER (password in $PW).
 * Prints the final page, then "verify=<code>". */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <tcpcrypt/tcpcrypt.h>

static char head[16384];
static char body[16384];

/* Sends a GET with the given Authorization and reads the response head and
 * its Content-Length body. Returns the status, or -1. */
static int get(int fd, const char *path, const char *auth)
{
	char req[4096];
	int n = snprintf(req, sizeof req,
			 "GET %s HTTP/1.1\r\nHost: test\r\nAuthorization: %s\r\n"
			 "Connection: keep-alive\r\n\r\n", path, auth);
	if (n < 0 || (size_t)n >= sizeof req || write(fd, req, (size_t)n) != n)
		return -1;
	size_t got = 0;
	char *end = NULL;
	while (!end) {
		if (got + 1 >= sizeof head)
			return -1;
		ssize_t r = read(fd, head + got, 1);
		if (r <= 0)
			return -1;
		got += (size_t)r;
		head[got] = 0;
		end = strstr(head, "\r\n\r\n");
	}
	long length = 0;
	for (char *line = strstr(head, "\r\n"); line && line < end; line = strstr(line + 2, "\r\n"))
		if (strncasecmp(line + 2, "Content-Length:", 15) == 0)
			length = strtol(line + 17, NULL, 10);
	if (length < 0 || (size_t)length >= sizeof body)
		return -1;
	for (long have = 0; have < length;) {
		ssize_t r = read(fd, body + have, (size_t)(length - have));
		if (r <= 0)
			return -1;
		have += r;
	}
	body[length] = 0;
	return atoi(head + 9);
}

/* The value of header NAME in the last head, copied into out. */
static int header(const char *name, char *out, size_t len)
{
	size_t nlen = strlen(name);
	for (char *line = strstr(head, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
		if (strncasecmp(line + 2, name, nlen) == 0 && line[2 + nlen] == ':') {
			const char *v = line + 3 + nlen;
			while (*v == ' ')
				v++;
			size_t vlen = strcspn(v, "\r");
			if (vlen >= len)
				return -1;
			memcpy(out, v, vlen);
			out[vlen] = 0;
			return 0;
		}
	}
	return -1;
}

int main(int argc, char **argv)
{
	if (argc != 6 || !getenv("PW"))
		return 2;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[3])) };
	inet_pton(AF_INET, argv[2], &sa.sin_addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
		return 3;
	char auth[TCPCRYPT_LOGIN_HEADER_MAX], value[TCPCRYPT_LOGIN_HEADER_MAX];
	int err = 0;
	struct tcpcrypt_login *login = tcpcrypt_login_start(argv[1], fd, 2000, argv[5], auth, sizeof auth, &err);
	if (!login) {
		printf("start=%d %s\n", err, tcpcrypt_strerror(err));
		return 4;
	}
	int status = get(fd, argv[4], auth);
	if (status != 401 || header("WWW-Authenticate", value, sizeof value) != 0) {
		printf("first status=%d\n", status);
		return 5;
	}
	err = tcpcrypt_login_answer(login, value, getenv("PW"), auth, sizeof auth);
	if (err != 0) {
		printf("answer=%d %s\n", err, tcpcrypt_strerror(err));
		return 6;
	}
	status = get(fd, argv[4], auth);
	printf("status=%d\n", status);
	if (status == 200) {
		err = tcpcrypt_login_verify(login, header("Authentication-Info", value, sizeof value) == 0 ? value : NULL);
		fputs(body, stdout);
		printf("verify=%d\n", err);
	}
	tcpcrypt_login_free(login);
	close(fd);
	return status == 200 && err == 0 ? 0 : 7;
}
