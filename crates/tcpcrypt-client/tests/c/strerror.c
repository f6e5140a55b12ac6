/* Links against an installed libtcpcrypt and prints one error text. */
#include <errno.h>
#include <stdio.h>

#include <tcpcrypt/tcpcrypt.h>

int main(void)
{
	puts(tcpcrypt_strerror(-ENOENT));
	return 0;
}
