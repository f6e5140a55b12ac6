/* Prints the layout of struct tcpcrypt_info as this C compiler sees it, for
 * comparison with the Rust definition. */
#include <stddef.h>
#include <stdio.h>

#include <tcpcrypt/tcpcrypt.h>

#define FIELD(f) printf("%s %zu\n", #f, offsetof(struct tcpcrypt_info, f))

int main(void)
{
	printf("size %zu\n", sizeof(struct tcpcrypt_info));
	FIELD(state);
	FIELD(role);
	FIELD(sessid_len);
	FIELD(sessid);
	FIELD(sessid_hex);
	FIELD(tep);
	FIELD(tep_name);
	FIELD(aead);
	FIELD(aead_name);
	FIELD(resumed);
	FIELD(peer_app_aware);
	FIELD(reason);
	return 0;
}
