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

/* Reads one byte into *c; -1 at the end of the connection. */
static int byte(int fd, char *c)
{
	return read(fd, c, 1) == 1 ? 0 : -1;
}

/* Reads a CRLF-terminated line (without the CRLF) into line[len]. */
static int read_line(int fd, char *line, size_t len)
{
	size_t n = 0;
	char c;
	while (byte(fd, &c) == 0) {
		if (c == '\n') {
			if (n > 0 && line[n - 1] == '\r')
				n--;
			line[n] = 0;
			return 0;
		}
		if (n + 1 >= len)
			return -1;
		line[n++] = c;
	}
	return -1;
}

/* Appends exactly n body bytes from fd at body[*have]. */
static int read_body(int fd, size_t n, size_t *have)
{
	if (*have + n >= sizeof body)
		return -1;
	while (n > 0) {
		ssize_t r = read(fd, body + *have, n);
		if (r <= 0)
			return -1;
		*have += (size_t)r;
		n -= (size_t)r;
	}
	body[*have] = 0;
	return 0;
}

/* Sends a GET with the given Authorization and reads the response: head,
 * then a body framed by Content-Length or chunked encoding (CGI output
 * comes either way). Returns the status, or -1. */
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
		if (got + 1 >= sizeof head || byte(fd, head + got) != 0)
			return -1;
		head[++got] = 0;
		end = strstr(head, "\r\n\r\n");
	}
	long length = 0;
	int chunked = 0;
	for (char *line = strstr(head, "\r\n"); line && line < end; line = strstr(line + 2, "\r\n")) {
		if (strncasecmp(line + 2, "Content-Length:", 15) == 0)
			length = strtol(line + 17, NULL, 10);
		if (strncasecmp(line + 2, "Transfer-Encoding: chunked", 26) == 0)
			chunked = 1;
	}
	size_t have = 0;
	body[0] = 0;
	if (chunked) {
		char line[64];
		for (;;) {
			if (read_line(fd, line, sizeof line) != 0)
				return -1;
			size_t size = strtoul(line, NULL, 16);
			if (size == 0)
				break;
			if (read_body(fd, size, &have) != 0 || read_line(fd, line, sizeof line) != 0)
				return -1;
		}
		/* Trailer fields, up to the empty line. */
		do {
			if (read_line(fd, line, sizeof line) != 0)
				return -1;
		} while (line[0] != 0);
	} else if (length < 0 || read_body(fd, (size_t)length, &have) != 0) {
		return -1;
	}
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
