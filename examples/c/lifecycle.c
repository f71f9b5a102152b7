/*
 * lifecycle: the context rules of the C API (rdmaft_send.h, rdmaft_recv.h) over a real
 * connection, for the sanitizers: `make capi` builds it with AddressSanitizer +
 * UndefinedBehaviorSanitizer (lifecycle-asan) and with ThreadSanitizer (lifecycle-tsan).
 *
 *   lifecycle ADDR BASE_PORT WORKDIR [SCENARIOS]
 *
 * Uses BASE_PORT .. BASE_PORT+2 and writes under WORKDIR (which must exist). Each scenario
 * prints a line; any broken rule prints "FAIL: ..." and the exit status is 1.
 *
 *  1. stop_send while another thread waits: the receiver holds its first callback, so the
 *     send cannot finish; the waiter returns non-OK, the second file never arrives (the
 *     receiver reports it unfinished); a second stop and a wait after it are defined.
 *  2. double stop_send after a finished send, a wait after the stop, and a send context
 *     given to rdmaft_stop_recv (ignored).
 *  3. stop_send from the send's own callback: wait from there is refused, the stop returns,
 *     no callback follows, a wait after it is refused.
 *  4. two stop_recv from two callbacks on two connections at once, then a third stop.
 *  5. stop_recv while a transfer runs: its partial file is removed, no callback starts
 *     after the stop returned.
 *  6. rdmaft_start_send_opts over 3 lanes with a file split into parts: every entry gets
 *     one status callback (from the lanes' threads), the file arrives whole; options out
 *     of range are refused.
 *
 * Every wait is bounded (WAIT_SECONDS); all state shared with the callbacks is under `mu`.
 */
#include "rdmaft_send.h"
#include "rdmaft_recv.h"
#include <dirent.h>
#include <errno.h>
#include <unistd.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#define WAIT_SECONDS 120
#define PATH_LEN 4096
#define BIG (16 << 20)
#define SMALL 4096
#define CHUNK 4096 /* the senders' buffer: a 64 KiB window, far less than BIG */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int failures;
static struct timespec started;

/* Seconds since the start, for the log (mu held or not: only read after main set it). */
static double elapsed(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - started.tv_sec) + (now.tv_nsec - started.tv_nsec) / 1e9;
}

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&mu);
    failures++;
    printf("[%6.1fs] FAIL: ", elapsed());
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    pthread_mutex_unlock(&mu);
    va_end(ap);
}

static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&mu);
    printf("[%6.1fs] ", elapsed());
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    pthread_mutex_unlock(&mu);
    va_end(ap);
}

/* Waits on cv (mu held) until *flag is at least want; 0 on time-out. */
static int wait_for(const int *flag, int want)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += WAIT_SECONDS;
    while (*flag < want) {
        if (pthread_cond_timedwait(&cv, &mu, &deadline) == ETIMEDOUT)
            return *flag >= want;
    }
    return 1;
}

/* As wait_for, taking mu; fails the scenario (and says what) on time-out. */
static int await(const int *flag, int want, const char *what)
{
    pthread_mutex_lock(&mu);
    int ok = wait_for(flag, want);
    pthread_mutex_unlock(&mu);
    if (!ok)
        fail("no %s within %d s", what, WAIT_SECONDS);
    return ok;
}

static void bump(int *flag)
{
    pthread_mutex_lock(&mu);
    (*flag)++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static int get(const int *flag)
{
    pthread_mutex_lock(&mu);
    int v = *flag;
    pthread_mutex_unlock(&mu);
    return v;
}

static void path(char *out, size_t n, const char *a, const char *b)
{
    int len = snprintf(out, n, "%s/%s", a, b);
    if (len < 0 || (size_t)len >= n) {
        fprintf(stderr, "lifecycle: path too long: %s/%s\n", a, b);
        exit(2);
    }
}

static void make_dir(const char *p)
{
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
        perror(p);
        exit(2);
    }
}

static void make_file(const char *p, size_t size)
{
    FILE *f = fopen(p, "wb");
    if (f == NULL) {
        perror(p);
        exit(2);
    }
    static unsigned char block[1 << 16];
    uint64_t x = size | 1;
    for (size_t done = 0; done < size;) {
        size_t n = size - done < sizeof block ? size - done : sizeof block;
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            block[i] = (unsigned char)x;
        }
        if (fwrite(block, 1, n, f) != n) {
            perror(p);
            exit(2);
        }
        done += n;
    }
    if (fclose(f) != 0) {
        perror(p);
        exit(2);
    }
}

static int exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* Files in dir whose name starts with ".rdmaft-" (the receiver's temporary names). */
static int temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, ".rdmaft-", 8) == 0)
            n++;
    closedir(d);
    return n;
}

static char *addr, *work;
static char ports[3][16];

/* ---- the main receiver (scenarios 1-3): records every entry's status ---- */

#define MAX_ENTRIES 64
static char entry_name[MAX_ENTRIES][256];
static int entry_status[MAX_ENTRIES];
static int entries;
/* Scenario 1: the first callback for a name under hold_prefix waits until released. */
static const char *hold_prefix;
static int held, released;

static void on_entry(const char *filename, int status, void *user)
{
    if (user != &entries)
        fail("the receiver's user pointer changed");
    pthread_mutex_lock(&mu);
    if (entries < MAX_ENTRIES) {
        snprintf(entry_name[entries], sizeof entry_name[0], "%s", filename);
        entry_status[entries] = status;
        entries++;
    }
    if (hold_prefix != NULL && strncmp(filename, hold_prefix, strlen(hold_prefix)) == 0 &&
        held == 0) {
        held = 1;
        pthread_cond_broadcast(&cv);
        if (!wait_for(&released, 1)) {
            failures++;
            printf("[%6.1fs] FAIL: 1: the held receive callback was never released\n",
                   elapsed());
        }
    }
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* The status the receiver reported for `name`; -1 if none within WAIT_SECONDS. */
static int entry(const char *name)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += WAIT_SECONDS;
    pthread_mutex_lock(&mu);
    for (;;) {
        for (int i = 0; i < entries; i++) {
            if (strcmp(entry_name[i], name) == 0) {
                int s = entry_status[i];
                pthread_mutex_unlock(&mu);
                return s;
            }
        }
        if (pthread_cond_timedwait(&cv, &mu, &deadline) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&mu);
    return -1;
}

/* ---- scenario 1: stop_send while another thread waits ---- */

static struct rdmaft_send_client_context *s1_ctx;
static int s1_waiting, s1_status;
static char s1_text[512];

static void *s1_waiter(void *arg)
{
    (void)arg;
    bump(&s1_waiting);
    int status = rdmaft_send_wait(s1_ctx);
    pthread_mutex_lock(&mu);
    s1_status = status;
    snprintf(s1_text, sizeof s1_text, "%s", rdmaft_last_error());
    pthread_mutex_unlock(&mu);
    return NULL;
}

static void stop_during_wait(const char *src, const char *dest)
{
    char tree[PATH_LEN], a[PATH_LEN], b[PATH_LEN];
    path(tree, sizeof tree, src, "t1");
    make_dir(tree);
    path(a, sizeof a, tree, "a.bin");
    path(b, sizeof b, tree, "b.bin");
    make_file(a, SMALL);
    make_file(b, BIG);
    pthread_mutex_lock(&mu);
    hold_prefix = "t1/";
    pthread_mutex_unlock(&mu);

    s1_ctx = rdmaft_start_send(addr, ports[0], tree, CHUNK, NULL);
    if (s1_ctx == NULL) {
        fail("1: start_send: %s", rdmaft_last_error());
        return;
    }
    pthread_t waiter;
    pthread_create(&waiter, NULL, s1_waiter, NULL);
    /* a.bin arrived and the receiver holds its callback: b.bin cannot finish. */
    if (!await(&held, 1, "held receive callback") || !await(&s1_waiting, 1, "waiter"))
        return;
    /* Let the waiter get into rdmaft_send_wait (not needed for correctness: a stop that
     * comes first makes the wait a wait after stop, RDMAFT_EINVAL, also checked). */
    usleep(300 * 1000);
    rdmaft_stop_send(s1_ctx);
    pthread_join(waiter, NULL);
    int status = get(&s1_status);
    pthread_mutex_lock(&mu);
    char text[sizeof s1_text];
    memcpy(text, s1_text, sizeof text);
    pthread_mutex_unlock(&mu);
    /* The receiver holds its callback, so without a cancel the send would only end at its
     * idle timeout (an RDMAFT_EUNFINISHED that does not say "cancelled"). */
    if (status == RDMAFT_OK)
        fail("1: the wait returned OK although the send was stopped mid-file");
    else if (status == RDMAFT_EUNFINISHED && strstr(text, "cancelled") == NULL)
        fail("1: the wait ended, but not by the stop's cancel: %s", text);
    else if (status != RDMAFT_EUNFINISHED && status != RDMAFT_EINVAL)
        fail("1: the wait returned %d: %s", status, text);
    else
        say("1: the waiter returned %d, %s (%s: %s)", status, rdmaft_strerror(status),
            status == RDMAFT_EUNFINISHED ? "stopped during the wait" : "the stop came first",
            text);
    rdmaft_stop_send(s1_ctx); /* a second stop: nothing */
    if ((status = rdmaft_send_wait(s1_ctx)) != RDMAFT_EINVAL)
        fail("1: a wait after the stop returned %d, not RDMAFT_EINVAL", status);
    bump(&released);
    char name[PATH_LEN];
    int b_status = entry("t1/b.bin");
    path(name, sizeof name, dest, "t1/b.bin");
    if (b_status == RDMAFT_OK || exists(name))
        fail("1: the stopped send's t1/b.bin arrived whole (status %d)", b_status);
    else if (b_status < 0)
        fail("1: the receiver never reported t1/b.bin");
    else
        say("1: the receiver reports t1/b.bin %d, %s", b_status, rdmaft_strerror(b_status));
    if (entry("t1/a.bin") != RDMAFT_OK)
        fail("1: t1/a.bin did not arrive");
}

/* ---- scenario 2: double stop after a finished send ---- */

static void double_stop(const char *src)
{
    char file[PATH_LEN];
    path(file, sizeof file, src, "s2.bin");
    make_file(file, SMALL);
    struct rdmaft_send_client_context *ctx =
        rdmaft_start_send(addr, ports[0], file, CHUNK, NULL);
    if (ctx == NULL) {
        fail("2: start_send: %s", rdmaft_last_error());
        return;
    }
    int status = rdmaft_send_wait(ctx);
    if (status != RDMAFT_OK)
        fail("2: send: %s", rdmaft_last_error());
    /* A send context is no receiver context: ignored. */
    rdmaft_stop_recv((struct rdmaft_recv_server_context *)ctx);
    if ((status = rdmaft_send_wait(ctx)) != RDMAFT_OK)
        fail("2: a second wait returned %d", status);
    rdmaft_stop_send(ctx);
    rdmaft_stop_send(ctx);
    if ((status = rdmaft_send_wait(ctx)) != RDMAFT_EINVAL)
        fail("2: a wait after the stop returned %d, not RDMAFT_EINVAL", status);
    rdmaft_stop_send(NULL);
    if (rdmaft_send_wait(NULL) != RDMAFT_EINVAL)
        fail("2: a wait on NULL was not refused");
    say("2: double stop and wait after stop: defined");
}

/* ---- scenario 3: stop_send from the send's own callback ---- */

static struct rdmaft_send_client_context *s3_ctx;
static int s3_calls, s3_stopped, s3_wait_status;

static void s3_callback(const char *filename, int status, void *user)
{
    (void)filename;
    (void)status;
    (void)user;
    pthread_mutex_lock(&mu);
    int first = s3_calls++ == 0;
    struct rdmaft_send_client_context *ctx = s3_ctx;
    pthread_mutex_unlock(&mu);
    if (!first)
        return;
    int w = rdmaft_send_wait(ctx);
    rdmaft_stop_send(ctx);
    rdmaft_stop_send(ctx); /* again, still in the callback */
    pthread_mutex_lock(&mu);
    s3_wait_status = w;
    s3_stopped = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void stop_from_send_callback(const char *src, const char *dest)
{
    char tree[PATH_LEN], a[PATH_LEN], b[PATH_LEN];
    path(tree, sizeof tree, src, "t3");
    make_dir(tree);
    path(a, sizeof a, tree, "a.bin");
    path(b, sizeof b, tree, "b.bin");
    make_file(a, SMALL);
    make_file(b, BIG);
    /* The callback reads the context under mu: it cannot run before it is stored. */
    pthread_mutex_lock(&mu);
    s3_ctx = rdmaft_start_send_ex(addr, ports[0], tree, CHUNK, s3_callback, NULL);
    struct rdmaft_send_client_context *ctx = s3_ctx;
    pthread_mutex_unlock(&mu);
    if (ctx == NULL) {
        fail("3: start_send_ex: %s", rdmaft_last_error());
        return;
    }
    if (!await(&s3_stopped, 1, "stop from the send's callback"))
        return;
    if (get(&s3_wait_status) != RDMAFT_EINVAL)
        fail("3: a wait from the send's own callback returned %d", get(&s3_wait_status));
    int status = rdmaft_send_wait(ctx);
    if (status != RDMAFT_EINVAL)
        fail("3: a wait after the stop returned %d, not RDMAFT_EINVAL", status);
    rdmaft_stop_send(ctx);
    char name[PATH_LEN];
    int b_status = entry("t3/b.bin");
    path(name, sizeof name, dest, "t3/b.bin");
    if (b_status == RDMAFT_OK || exists(name))
        fail("3: t3/b.bin arrived whole although the send was stopped (status %d)",
             b_status);
    else if (b_status < 0)
        fail("3: the receiver never reported t3/b.bin");
    /* Checked again at the end: no callback after the stop. */
    if (get(&s3_calls) != 1)
        fail("3: %d send callbacks, 1 expected (none after the stop)", get(&s3_calls));
    say("3: stop from the send's callback: returned, wait refused, no callback after");
}

/* ---- scenario 4: two stop_recv from two callbacks at once ---- */

static struct rdmaft_recv_server_context *r2;
static int r2_arrived, r2_stops_returned;

static void r2_callback(const char *filename)
{
    (void)filename;
    pthread_mutex_lock(&mu);
    r2_arrived++;
    pthread_cond_broadcast(&cv);
    /* Both callbacks are running before either stops. */
    int both = wait_for(&r2_arrived, 2);
    struct rdmaft_recv_server_context *ctx = r2;
    pthread_mutex_unlock(&mu);
    if (!both)
        fail("4: the second callback never came");
    rdmaft_stop_recv(ctx);
    bump(&r2_stops_returned);
}

static void two_stops_from_two_callbacks(const char *src, const char *work_dir)
{
    char dest[PATH_LEN], x1[PATH_LEN], x2[PATH_LEN];
    path(dest, sizeof dest, work_dir, "dest2");
    make_dir(dest);
    path(x1, sizeof x1, src, "x1.bin");
    path(x2, sizeof x2, src, "x2.bin");
    make_file(x1, SMALL);
    make_file(x2, SMALL);
    pthread_mutex_lock(&mu);
    r2 = rdmaft_start_recv(ports[1], dest, 0, r2_callback);
    struct rdmaft_recv_server_context *ctx = r2;
    pthread_mutex_unlock(&mu);
    if (ctx == NULL) {
        fail("4: start_recv: %s", rdmaft_last_error());
        return;
    }
    /* A running receiver's buffer size: the default for 0, then what a reset gives every
     * running receiver (and back to the default). */
    if (rdmaft_recv_buffer_size(ctx) != (size_t)1 << 20)
        fail("4: a receiver started with buffer size 0 offers %zu, not 1 MiB",
             rdmaft_recv_buffer_size(ctx));
    rdmaft_reset_recv_buffer_size(65536);
    if (rdmaft_recv_buffer_size(ctx) != 65536)
        fail("4: after a reset to 64 KiB the receiver offers %zu", rdmaft_recv_buffer_size(ctx));
    rdmaft_reset_recv_buffer_size(0);
    /* Small chunks, so small rings: under ThreadSanitizer in the emulated VM, registering
     * two default 16 MiB rings at once can outlast the senders' 10 s handshake limit. */
    struct rdmaft_send_client_context *s1 = rdmaft_start_send(addr, ports[1], x1, CHUNK, NULL);
    struct rdmaft_send_client_context *s2 = rdmaft_start_send(addr, ports[1], x2, CHUNK, NULL);
    if (s1 == NULL || s2 == NULL)
        fail("4: start_send: %s", rdmaft_last_error());
    if (await(&r2_stops_returned, 2, "return of both stops from the callbacks")) {
        if (rdmaft_recv_buffer_size(ctx) != 0)
            fail("4: a stopped receiver still reports a buffer size");
        say("4: two stops from two callbacks: both returned");
    } else {
        say("4: %d callbacks came, %d stops returned", get(&r2_arrived),
            get(&r2_stops_returned));
    }
    rdmaft_stop_recv(ctx); /* a third stop: nothing (or, if the callbacks never came, the stop) */
    /* The senders' statuses depend on when the receiver went; only their end matters. */
    int w1 = rdmaft_send_wait(s1);
    say("4: the first sender ended with %d %s", w1, w1 ? rdmaft_last_error() : "");
    int w2 = rdmaft_send_wait(s2);
    say("4: the second sender ended with %d %s", w2, w2 ? rdmaft_last_error() : "");
    rdmaft_stop_send(s1);
    rdmaft_stop_send(s2);
}

/* ---- scenario 5: stop_recv while a transfer runs ---- */

static int s5_calls, s5_holding, s5_release, r3_stop_returned, r3_late_callbacks;

static void r3_callback(const char *filename, int status, void *user)
{
    (void)filename;
    (void)status;
    (void)user;
    pthread_mutex_lock(&mu);
    if (r3_stop_returned)
        r3_late_callbacks++;
    pthread_mutex_unlock(&mu);
}

static void s5_callback(const char *filename, int status, void *user)
{
    (void)filename;
    (void)status;
    (void)user;
    pthread_mutex_lock(&mu);
    if (s5_calls++ == 0) {
        /* Hold the send's thread: b.bin stays half sent. */
        s5_holding = 1;
        pthread_cond_broadcast(&cv);
        if (!wait_for(&s5_release, 1)) {
            failures++;
            printf("[%6.1fs] FAIL: 5: the held send callback was never released\n",
                   elapsed());
        }
    }
    pthread_mutex_unlock(&mu);
}

static void stop_recv_during_transfer(const char *src, const char *work_dir)
{
    char dest[PATH_LEN], tree[PATH_LEN], a[PATH_LEN], b[PATH_LEN], got[PATH_LEN];
    path(dest, sizeof dest, work_dir, "dest3");
    make_dir(dest);
    path(tree, sizeof tree, src, "t5");
    make_dir(tree);
    path(a, sizeof a, tree, "a.bin");
    path(b, sizeof b, tree, "b.bin");
    make_file(a, SMALL);
    make_file(b, BIG);
    struct rdmaft_recv_server_context *r3 =
        rdmaft_start_recv_ex(addr, ports[2], dest, 0, r3_callback, NULL);
    if (r3 == NULL) {
        fail("5: start_recv_ex: %s", rdmaft_last_error());
        return;
    }
    struct rdmaft_send_client_context *s =
        rdmaft_start_send_ex(addr, ports[2], tree, CHUNK, s5_callback, NULL);
    if (s == NULL) {
        fail("5: start_send_ex: %s", rdmaft_last_error());
        rdmaft_stop_recv(r3);
        return;
    }
    /* a.bin arrived; the sender is held in its callback with b.bin under way. */
    if (await(&s5_holding, 1, "held send callback")) {
        rdmaft_stop_recv(r3);
        bump(&r3_stop_returned);
        char t5[PATH_LEN];
        path(t5, sizeof t5, dest, "t5");
        path(got, sizeof got, dest, "t5/b.bin");
        if (exists(got))
            fail("5: t5/b.bin is there after the receiver stopped mid-file");
        if (temp_files(t5) != 0)
            fail("5: %d temporary files left in %s", temp_files(t5), t5);
        if (rdmaft_recv_buffer_size(r3) != 0)
            fail("5: a stopped receiver still reports a buffer size");
    }
    bump(&s5_release);
    int status = rdmaft_send_wait(s);
    if (status == RDMAFT_OK)
        fail("5: the send succeeded although the receiver stopped mid-file");
    rdmaft_stop_send(s);
    rdmaft_stop_recv(r3);
    if (get(&r3_late_callbacks) != 0)
        fail("5: %d receive callbacks after the stop returned", get(&r3_late_callbacks));
    say("5: stop_recv during a transfer: partial file removed, the send ended with %d, %s",
        status, rdmaft_strerror(status));
}

/* ---- scenario 6: options: lanes and parts ---- */

static int s6_calls, s6_ok;

static void s6_callback(const char *filename, int status, void *user)
{
    (void)filename;
    (void)user;
    pthread_mutex_lock(&mu);
    s6_calls++;
    if (status == RDMAFT_OK)
        s6_ok++;
    pthread_mutex_unlock(&mu);
}

/* Whether files a and b hold the same bytes. */
static int same_bytes(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa != NULL && fb != NULL;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        same = ca == cb;
        if (ca == EOF || cb == EOF)
            break;
    }
    if (fa != NULL)
        fclose(fa);
    if (fb != NULL)
        fclose(fb);
    return same;
}

static void lanes_and_parts(const char *src, const char *dest)
{
    char tree[PATH_LEN], big[PATH_LEN], small[PATH_LEN];
    path(tree, sizeof tree, src, "t6");
    make_dir(tree);
    path(big, sizeof big, tree, "big.bin");
    path(small, sizeof small, tree, "small.bin");
    make_file(big, (1 << 20) + 5); /* 5 parts of 256 KiB, the last of 5 bytes */
    make_file(small, SMALL);
    struct rdmaft_send_options bad = {.struct_size = sizeof bad, .lanes = 65};
    if (rdmaft_start_send_opts(addr, ports[0], tree, &bad, NULL, NULL) != NULL)
        fail("6: 65 lanes were taken");
    bad.lanes = 2;
    bad.part_size = 100;
    if (rdmaft_start_send_opts(addr, ports[0], tree, &bad, NULL, NULL) != NULL)
        fail("6: a part size of 100 bytes was taken");
    struct rdmaft_send_options o = {
        .struct_size = sizeof o, .buffer_size = 65536, .lanes = 3, .part_size = 1 << 18};
    struct rdmaft_send_client_context *ctx =
        rdmaft_start_send_opts(addr, ports[0], tree, &o, s6_callback, NULL);
    if (ctx == NULL) {
        fail("6: start_send_opts: %s", rdmaft_last_error());
        return;
    }
    int status = rdmaft_send_wait(ctx);
    rdmaft_stop_send(ctx);
    if (status != RDMAFT_OK)
        fail("6: send over lanes: %d: %s", status, rdmaft_last_error());
    /* big.bin, small.bin and the directory: one callback each, whatever lane ended it. */
    if (get(&s6_calls) != 3 || get(&s6_ok) != 3)
        fail("6: %d callbacks (%d OK), 3 expected", get(&s6_calls), get(&s6_ok));
    char got[PATH_LEN];
    path(got, sizeof got, dest, "t6/big.bin");
    if (!same_bytes(big, got))
        fail("6: t6/big.bin differs after its parts were joined");
    if (entry("t6/big.bin") != RDMAFT_OK)
        fail("6: the receiver did not report t6/big.bin verified");
    say("6: options: 3 lanes, a file in 5 parts arrived whole, bad options refused");
}

/* ---- scenario 7: sync (after 6): nothing moves, what the source lost is deleted, a new
 * link arrives as a link ---- */

static void sync_again(const char *src, const char *dest)
{
    char tree[PATH_LEN], extra[PATH_LEN], link[PATH_LEN], got[PATH_LEN];
    path(tree, sizeof tree, src, "t6");
    path(extra, sizeof extra, dest, "t6/extra");
    path(link, sizeof link, tree, "link");
    path(got, sizeof got, dest, "t6/link");
    make_file(extra, 10);
    if (symlink("small.bin", link) != 0)
        fail("7: symlink: %s", strerror(errno));
    struct rdmaft_send_options bad = {.struct_size = sizeof bad, .sync = 0x10};
    if (rdmaft_start_send_opts(addr, ports[0], tree, &bad, NULL, NULL) != NULL)
        fail("7: unknown sync flags were taken");
    bad.sync = 0;
    bad.flags = 0x2;
    if (rdmaft_start_send_opts(addr, ports[0], tree, &bad, NULL, NULL) != NULL)
        fail("7: unknown flags were taken");
    s6_calls = s6_ok = 0;
    struct rdmaft_send_options o = {.struct_size = sizeof o,
                                    .sync = RDMAFT_SYNC | RDMAFT_SYNC_DELETE,
                                    .flags = RDMAFT_SEND_LINKS};
    struct rdmaft_send_client_context *ctx =
        rdmaft_start_send_opts(addr, ports[0], tree, &o, s6_callback, NULL);
    if (ctx == NULL) {
        fail("7: start_send_opts: %s", rdmaft_last_error());
        return;
    }
    int status = rdmaft_send_wait(ctx);
    rdmaft_stop_send(ctx);
    if (status != RDMAFT_OK)
        fail("7: sync: %d: %s", status, rdmaft_last_error());
    if (get(&s6_calls) != 4 || get(&s6_ok) != 4)
        fail("7: %d callbacks (%d OK), 4 expected", get(&s6_calls), get(&s6_ok));
    if (access(extra, F_OK) == 0)
        fail("7: t6/extra, which the sender does not have, is still there");
    char target[PATH_LEN] = {0};
    if (readlink(got, target, sizeof target - 1) < 0 || strcmp(target, "small.bin") != 0)
        fail("7: t6/link is not a link to small.bin: '%s'", target);
    say("7: sync with delete and links: up to date, the extra file removed, the link made, "
        "bad flags refused");
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s ADDR BASE_PORT WORKDIR\n", argv[0]);
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &started);
    addr = argv[1];
    work = argv[3];
    long base = strtol(argv[2], NULL, 10);
    for (int i = 0; i < 3; i++)
        snprintf(ports[i], sizeof ports[i], "%ld", base + i);
    char src[PATH_LEN], dest[PATH_LEN];
    path(src, sizeof src, work, "src");
    path(dest, sizeof dest, work, "dest");
    make_dir(src);
    make_dir(dest);

    struct rdmaft_recv_server_context *r =
        rdmaft_start_recv_ex(addr, ports[0], dest, 0, on_entry, &entries);
    if (r == NULL) {
        fprintf(stderr, "lifecycle: receiver: %s\n", rdmaft_last_error());
        return 1;
    }
    const char *run = argc > 4 ? argv[4] : "1234567"; /* which scenarios, for debugging */
    if (strchr(run, '1'))
        stop_during_wait(src, dest);
    if (strchr(run, '2'))
        double_stop(src);
    if (strchr(run, '3'))
        stop_from_send_callback(src, dest);
    if (strchr(run, '4'))
        two_stops_from_two_callbacks(src, work);
    if (strchr(run, '5'))
        stop_recv_during_transfer(src, work);
    if (strchr(run, '6'))
        lanes_and_parts(src, dest);
    if (strchr(run, '6') && strchr(run, '7'))
        sync_again(src, dest);
    rdmaft_stop_recv(r);
    rdmaft_stop_recv(r);
    if (strchr(run, '3') && get(&s3_calls) != 1)
        fail("3: %d send callbacks by the end, 1 expected", get(&s3_calls));
    int n = get(&failures);
    printf("lifecycle: %s (%d failures)\n", n == 0 ? "ok" : "FAILED", n);
    return n == 0 ? 0 : 1;
}
