/*
 * mod_tcpcrypt's optional functions, for other httpd modules.
 *
 *   #include "mod_tcpcrypt.h"
 *   APR_OPTIONAL_FN_TYPE(tcpcrypt_conn_var) *conn_var =
 *       APR_RETRIEVE_OPTIONAL_FN(tcpcrypt_conn_var);   // in post_config
 *   const char *id = conn_var ? conn_var(r->pool, r->connection,
 *                                        "TCP_CRYPT_SESSID") : NULL;
 *
 * Both accept an HTTP/2 stream's connection (they use its master) and do
 * the connection's one session lookup if nothing has yet.
 */
#ifndef MOD_TCPCRYPT_H
#define MOD_TCPCRYPT_H

#include "httpd.h"
#include "apr_optional.h"

/* The value of a TCP_CRYPT_* variable (TCP_CRYPT_SESSID, TCP_CRYPT_ROLE,
 * TCP_CRYPT_TEP, TCP_CRYPT_AEAD, TCP_CRYPT_RESUMED) for connection c,
 * allocated from p; NULL if c is not a tcpcrypt connection or name is not
 * one of these. Independent of the Tcpcrypt On|Off directive. */
APR_DECLARE_OPTIONAL_FN(const char *, tcpcrypt_conn_var,
                        (apr_pool_t *p, conn_rec *c, const char *name));

/* 1 if connection c runs tcpcrypt, else 0. */
APR_DECLARE_OPTIONAL_FN(int, tcpcrypt_conn_is_encrypted, (conn_rec *c));

#endif
