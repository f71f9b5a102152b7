/*
 * leakcheck: start and stop a receiver and a sender ROUNDS times (a small file each time,
 * every other round with the status-callback variants and a buffer-size reset), checking
 * each file arrives. Built with -fsanitize=address by `make capi`, so LeakSanitizer reports
 * any leak at exit (and the exit status is then non-zero).
 *
 *   leakcheck ADDR PORT FILE DIR [ROUNDS]
 */
#include "rdmaft_send.h"
#include "rdmaft_recv.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int received;

static void on_received(const char *filename)
{
    (void)filename;
    pthread_mutex_lock(&lock);
    received++;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

static void on_received_status(const char *filename, int status, void *user)
{
    if (status == RDMAFT_OK && user == &received)
        on_received(filename);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s ADDR PORT FILE DIR [ROUNDS]\n", argv[0]);
        return 2;
    }
    int rounds = argc > 5 ? atoi(argv[5]) : 100;
    for (int i = 0; i < rounds; i++) {
        struct rdmaft_recv_server_context *recv;
        if (i % 2 == 0) {
            recv = rdmaft_start_recv(argv[2], argv[4], 0, on_received);
        } else {
            rdmaft_reset_recv_buffer_size(64 * 1024);
            recv = rdmaft_start_recv_ex(argv[1], argv[2], argv[4], 0, on_received_status,
                                        &received);
        }
        if (recv == NULL) {
            fprintf(stderr, "leakcheck: round %d: receiver: %s\n", i, rdmaft_last_error());
            return 1;
        }
        struct rdmaft_send_client_context *send =
            rdmaft_start_send(argv[1], argv[2], argv[3], 4096 << (i % 8), NULL);
        if (send == NULL) {
            fprintf(stderr, "leakcheck: round %d: sender: %s\n", i, rdmaft_last_error());
            return 1;
        }
        int status = rdmaft_send_wait(send);
        rdmaft_stop_send(send);
        if (status != RDMAFT_OK) {
            fprintf(stderr, "leakcheck: round %d: send: %s\n", i, rdmaft_last_error());
            return 1;
        }
        /* The sender's verdict comes after the receiver's callback: the count is final. */
        pthread_mutex_lock(&lock);
        int got = received;
        pthread_mutex_unlock(&lock);
        rdmaft_stop_recv(recv);
        if (got != i + 1) {
            fprintf(stderr, "leakcheck: round %d: %d files received, %d expected\n", i, got,
                    i + 1);
            return 1;
        }
    }
    printf("leakcheck: %d rounds, %d files received\n", rounds, received);
    return 0;
}
