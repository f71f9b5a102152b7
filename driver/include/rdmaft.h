/*
 * rdmaft.h: what the C API adds to the original librdmaft: status codes, the text of the
 * last failure. Included by rdmaft_send.h and rdmaft_recv.h.
 *
 * Threads: start calls return at once; transfers and callbacks run on library threads.
 * No call exits the process; failures come back as NULL or a status, with a text from
 * rdmaft_last_error() on the calling thread.
 */
#ifndef RDMAFT_H
#define RDMAFT_H

/* The original headers pulled these in, and programs written against them rely on it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes (rdmaft_send_wait, the *_ex callbacks). */
#define RDMAFT_OK          0 /* success */
#define RDMAFT_EINVAL      1 /* an argument is invalid (NULL, bad address or port) */
#define RDMAFT_ECONNECT    2 /* could not reach or agree with the peer (wrong key included) */
#define RDMAFT_EFILE       3 /* a local file or directory could not be used */
#define RDMAFT_EREJECTED   4 /* the receiver refused the file */
#define RDMAFT_EFAILED     5 /* the file moved but failed verification or was aborted */
#define RDMAFT_EUNFINISHED 6 /* the transfer ended before the file did (stopped, lost) */
#define RDMAFT_ESYSTEM     7 /* RDMA device, memory registration or system failure */

/* The text of the last failure on the calling thread ("" if none); valid until the next
 * librdmaft call on this thread. */
const char *rdmaft_last_error(void);

/* A short static description of a status code. */
const char *rdmaft_strerror(int status);

#ifdef __cplusplus
}
#endif

#endif /* RDMAFT_H */
