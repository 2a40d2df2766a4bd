/*
 * loadgen: the load of `tcpcomm bench`, in C, for benchmarks/compare.py.
 *
 * On a 2-core machine the server gets one CPU and the generator the other;
 * a Python generator then costs about as much per round trip as the fastest
 * Python servers, and it is the bottleneck.  This program does the same
 * work (same options, same loads, every echoed byte checked against what
 * was sent, same latency histogram, same JSON) at a fraction of the CPU.
 * compare.py builds it with the system's C compiler (`--generator c`); it
 * is not part of the tcpcomm package.
 *
 *   loadgen HOST:PORT --mode {pingpong,lines,stream} [--connections C]
 *       [--size S] [--pipeline P] [--duration D] [--warmup W]
 *       [--processes N] [--framing {line,length:4}] [--json] [--quiet]
 *
 * HOST is a numeric IPv4 or IPv6 address ([::1]:PORT).  --framing line
 * (the default) sends S-byte lines, LF included; --framing length:4 (as
 * `tcpcomm bench --framing` and `twistd tcpcomm --framing` write it) sends
 * frames of a 4-byte big-endian length field and an S-byte payload
 * (Twisted's Int32StringReceiver), expects each echo to be the same frame,
 * and cuts the replies by their headers across reads, counting frames (the
 * JSON then says "framing": "length:4").  Exit status 0 when
 * every byte sent came back verified, 1 with one line on standard error
 * otherwise (the JSON, with --json, says verified false), 2 for a bad
 * command line.  Every phase is bounded in time.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KIB 1024
#define STREAM_WINDOW (256 * KIB)
#define STREAM_WRITE (64 * KIB)
#define MIN_PATTERN_BYTES (256 * KIB)
#define BUCKETS 2048
#define GRACE_S 3.0
#define FINISH_LIMIT_S 10.0
#define CONNECT_TIMEOUT_S 10.0
#define SECOND 1000000000LL
#define LENGTH_HEADER 4

typedef struct {
    int fd;
    int writing;
    int64_t received, sent, target;
    int64_t rpos, spos;
    int64_t checkedReceived, checkedAt;
    /* --framing length: the reply frame being read, cut by its header. */
    unsigned char header[LENGTH_HEADER];
    int headerHave;
    int64_t bodyLeft, frames;
    /* Sends that finished lines: (lines sent so far, when), oldest first. */
    int64_t *batchEnd, *batchAt;
    int batchHead, batchCount, batchCap;
} Conn;

typedef struct {
    int ok;
    int64_t messages, bytes;
    double seconds, cpuSeconds;
    uint64_t histogram[BUCKETS];
    char error[400];
} Result;

static struct {
    const char *endpoint, *mode;
    int connections, size, pipeline, processes, json, quiet, length;
    double duration, warmup;
} opt = {NULL, NULL, 100, 64, 0, 1, 0, 0, 0, 5.0, 1.0};

static int64_t nowNs(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * SECOND + ts.tv_nsec;
}

static double cpuNow(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void fail(Result *r, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(r->error, sizeof r->error, format, args);
    va_end(args);
    r->ok = 0;
}

static void usage(const char *why) {
    fprintf(stderr, "loadgen: error: %s\n", why);
    exit(2);
}

static int bucketOf(int64_t ns) {
    if (ns < 64) return ns < 0 ? 0 : (int)ns;
    int shift = 64 - __builtin_clzll((unsigned long long)ns) - 6;
    int bucket = (shift << 5) + (int)(ns >> shift);
    return bucket < BUCKETS ? bucket : BUCKETS - 1;
}

static double bucketMidpoint(int bucket) {
    if (bucket < 64) return bucket;
    int shift = (bucket >> 5) - 1;
    double low = (double)((int64_t)(32 + (bucket & 31)) << shift);
    return low + (double)((1LL << shift) - 1) / 2;
}

static double percentile(const uint64_t *h, double fraction) {
    uint64_t total = 0, seen = 0;
    for (int b = 0; b < BUCKETS; b++) total += h[b];
    if (!total) return 0.0;
    uint64_t rank = (uint64_t)(fraction * (double)total);
    if ((double)rank < fraction * (double)total) rank++;
    if (rank < 1) rank = 1;
    for (int b = 0; b < BUCKETS; b++) {
        seen += h[b];
        if (seen >= rank) return bucketMidpoint(b);
    }
    return bucketMidpoint(BUCKETS - 1);
}

/* Lines of `size` bytes, printable, each ending in LF and holding no other
 * LF nor CR, from a fixed seed: every connection starts at its own line.
 * With --framing length, each `size`-byte message is instead a 4-byte
 * big-endian length field holding size - 4, then that many printable bytes. */
static char *makePattern(int size, int lines) {
    size_t n = (size_t)size * lines;
    char *p = malloc(2 * n);
    uint32_t x = 2463534242u;
    uint32_t body = (uint32_t)(size - LENGTH_HEADER);
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        size_t at = i % size;
        if (opt.length)
            p[i] = at < LENGTH_HEADER ? (char)(body >> (8 * (LENGTH_HEADER - 1 - at)))
                                      : (char)('!' + x % 94);
        else
            p[i] = at == (size_t)size - 1 ? '\n' : (char)('!' + x % 94);
    }
    memcpy(p + n, p, n);
    return p;
}

/* Cut the `got` bytes of a reply read on `c` into length-prefixed frames,
 * carrying a header or body split across reads over to the next read.
 * Returns 0, or -1 with the header's value in *said when a frame's length
 * field is not the payload size sent. */
static int cutFrames(Conn *c, const unsigned char *data, int64_t got, uint32_t *said) {
    int64_t at = 0;
    while (at < got) {
        if (c->headerHave < LENGTH_HEADER) {
            c->header[c->headerHave++] = data[at++];
            if (c->headerHave == LENGTH_HEADER) {
                uint32_t value = (uint32_t)c->header[0] << 24 | (uint32_t)c->header[1] << 16 |
                                 (uint32_t)c->header[2] << 8 | c->header[3];
                if (value != (uint32_t)opt.size) {
                    *said = value;
                    return -1;
                }
                c->bodyLeft = value;
            } else {
                continue;
            }
        } else {
            int64_t take = got - at < c->bodyLeft ? got - at : c->bodyLeft;
            c->bodyLeft -= take;
            at += take;
        }
        if (c->bodyLeft == 0) {
            c->frames++;
            c->headerHave = 0;
        }
    }
    return 0;
}

static int parseEndpoint(const char *text, struct sockaddr_storage *ss,
                         socklen_t *len) {
    char host[256];
    const char *colon = strrchr(text, ':');
    if (!colon || colon == text) return -1;
    size_t hl = (size_t)(colon - text);
    if (hl >= sizeof host) return -1;
    memcpy(host, text, hl);
    host[hl] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535) return -1;
    memset(ss, 0, sizeof *ss);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        host[hl - 1] = 0;
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1) return -1;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        *len = sizeof *a;
        return 0;
    }
    if (!strcmp(host, "localhost")) strcpy(host, "127.0.0.1");
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1) return -1;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    *len = sizeof *a;
    return 0;
}

static void raiseFileLimit(int needed) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)needed) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)needed ? rl.rlim_max : (rlim_t)needed;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* The load of one process: `count` connections from global index `first`. */
static void runLoad(int first, int count, Result *r) {
    struct sockaddr_storage ss;
    socklen_t sslen;
    memset(r, 0, sizeof *r);
    r->ok = 1;
    parseEndpoint(opt.endpoint, &ss, &sslen);
    int stream = !strcmp(opt.mode, "stream");
    /* The bytes of one message on the wire: a line, or a header and payload. */
    const int64_t size = opt.size + (opt.length ? LENGTH_HEADER : 0);
    const int64_t pipeline = opt.pipeline;
    const int64_t window = pipeline * size;
    int64_t minLines = 1;
    if (stream) {
        minLines = pipeline / 4 < STREAM_WRITE / size ? pipeline / 4 : STREAM_WRITE / size;
        if (minLines < 1) minLines = 1;
    }
    const int64_t minimumSend = minLines * size;
    int64_t lines = (MIN_PATTERN_BYTES + size - 1) / size;
    if (lines < pipeline) lines = pipeline;
    if (lines < 4) lines = 4;
    const int64_t block = lines * size;
    char *pattern = makePattern((int)size, (int)lines);
    int64_t receiveSize = window < block ? window : block;
    char *buffer = malloc((size_t)receiveSize);
    raiseFileLimit(count + 64);

    Conn *conns = calloc((size_t)count, sizeof *conns);
    int epfd = epoll_create1(0);
    int64_t deadline = nowNs() + (int64_t)(CONNECT_TIMEOUT_S * SECOND);
    int maxFd = 0;
    for (int k = 0; k < count; k++) {
        Conn *c = &conns[k];
        int index = first + k;
        int64_t stride = lines / opt.connections > 1 ? lines / opt.connections : 1;
        c->rpos = c->spos = (index * stride) % lines * size;
        c->batchCap = (int)pipeline + 2;
        c->batchEnd = malloc(sizeof(int64_t) * c->batchCap);
        c->batchAt = malloc(sizeof(int64_t) * c->batchCap);
        c->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (c->fd < 0) {
            fail(r, "connection #%d: cannot make a socket: %s", index + 1, strerror(errno));
            return;
        }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c->fd, (struct sockaddr *)&ss, sslen) < 0 && errno != EINPROGRESS) {
            fail(r, "cannot connect to %s: %s (connection #%d of %d)", opt.endpoint,
                 strerror(errno), index + 1, opt.connections);
            return;
        }
        struct pollfd p = {c->fd, POLLOUT, 0};
        for (;;) {
            int left = (int)((deadline - nowNs()) / 1000000);
            if (left <= 0) {
                fail(r, "timed out after %g s connecting to %s (%d of %d connections open)",
                     CONNECT_TIMEOUT_S, opt.endpoint, k, count);
                return;
            }
            int n = poll(&p, 1, left);
            if (n > 0) break;
            if (n < 0 && errno != EINTR) {
                fail(r, "poll: %s", strerror(errno));
                return;
            }
        }
        int status = 0;
        socklen_t sl = sizeof status;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &status, &sl);
        if (status) {
            fail(r, "%s %s: %s (connection #%d of %d)",
                 status == ECONNREFUSED ? "connection refused by" : "cannot connect to",
                 opt.endpoint, strerror(status), index + 1, opt.connections);
            return;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)k};
        epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
        if (c->fd > maxFd) maxFd = c->fd;
    }

    uint64_t *histogram = r->histogram;
    const int64_t stallNs = (int64_t)(GRACE_S * SECOND);
    const int64_t tick = SECOND < stallNs / 2 ? SECOND : stallNs / 2;
    int64_t start = nowNs();
    int64_t warmupEnd = start + (int64_t)(opt.warmup * SECOND);
    int64_t measureEnd = warmupEnd + (int64_t)(opt.duration * SECOND);
    double finish = GRACE_S > FINISH_LIMIT_S ? GRACE_S : FINISH_LIMIT_S;
    int64_t finishDeadline = measureEnd + (int64_t)(finish * SECOND);
    enum { WARMUP, MEASURING, FINISHING } phase = WARMUP;
    int sending = 1, unfinished = count;
    int64_t nextTick = start + SECOND < warmupEnd ? start + SECOND : warmupEnd;
    int64_t snapAt = start, snapBytes = 0, snapLines = 0;
    double snapCpu = 0;
    int64_t lastProgress = start, lastProgressBytes = 0;

#define SEND(c, t)                                                              \
    do {                                                                        \
        ssize_t n_ = send((c)->fd, pattern + (c)->spos, (size_t)((c)->target - (c)->sent), \
                          MSG_NOSIGNAL);                                        \
        if (n_ < 0) {                                                           \
            if (errno != EAGAIN && errno != EINTR) {                            \
                fail(r, "connection #%d: %s after %lld bytes sent",             \
                     first + (int)((c) - conns) + 1, strerror(errno),           \
                     (long long)(c)->sent);                                     \
                return;                                                         \
            }                                                                   \
            n_ = 0;                                                             \
        }                                                                       \
        if (n_) {                                                               \
            int64_t before_ = (c)->sent / size;                                 \
            (c)->sent += n_;                                                    \
            (c)->spos += n_;                                                    \
            if ((c)->spos >= block) (c)->spos -= block;                         \
            if ((c)->sent / size != before_) {                                  \
                int at_ = ((c)->batchHead + (c)->batchCount) % (c)->batchCap;   \
                (c)->batchEnd[at_] = (c)->sent / size;                          \
                (c)->batchAt[at_] = (t);                                        \
                (c)->batchCount++;                                              \
            }                                                                   \
        }                                                                       \
        int want_ = (c)->sent < (c)->target;                                    \
        if (want_ != (c)->writing) {                                            \
            struct epoll_event ev_ = {.events = EPOLLIN | (want_ ? EPOLLOUT : 0), \
                                      .data.u32 = (uint32_t)((c) - conns)};     \
            epoll_ctl(epfd, EPOLL_CTL_MOD, (c)->fd, &ev_);                      \
            (c)->writing = want_;                                               \
        }                                                                       \
    } while (0)

    for (int k = 0; k < count; k++) {
        conns[k].target = window;
        conns[k].checkedAt = start;
        SEND(&conns[k], start);
    }

    struct epoll_event events[256];
    for (;;) {
        int64_t t = nowNs();
        if (t >= nextTick) {
            int64_t totalBytes = 0, totalLines = 0;
            for (int k = 0; k < count; k++) {
                totalBytes += conns[k].received;
                totalLines += conns[k].received / size;
            }
            if (!opt.quiet && opt.processes == 1 && t - lastProgress >= SECOND / 2) {
                double interval = (double)(t - lastProgress) / SECOND;
                fprintf(stderr, "\r%s %.0f s: %.0f %s/s, %.1f MB/s   ",
                        phase == WARMUP ? "warm-up" : phase == MEASURING ? "measuring" : "finishing",
                        (double)(t - start) / SECOND,
                        (double)(totalBytes - lastProgressBytes) / size / interval,
                        opt.length ? "frames" : "lines",
                        (double)(totalBytes - lastProgressBytes) / interval / 1e6);
                lastProgress = t;
                lastProgressBytes = totalBytes;
            }
            if (phase == WARMUP && t >= warmupEnd) {
                snapAt = t, snapBytes = totalBytes, snapLines = totalLines;
                snapCpu = cpuNow();
                memset(histogram, 0, sizeof r->histogram);
                phase = MEASURING;
            } else if (phase == MEASURING && t >= measureEnd) {
                r->messages = totalLines - snapLines;
                r->bytes = totalBytes - snapBytes;
                r->seconds = (double)(t - snapAt) / SECOND;
                r->cpuSeconds = cpuNow() - snapCpu;
                phase = FINISHING;
                sending = 0;
                unfinished = 0;
                for (int k = 0; k < count; k++) {
                    conns[k].target = conns[k].sent;
                    unfinished += conns[k].received < conns[k].target;
                }
                if (!unfinished) break;
            }
            for (int k = 0; k < count; k++) {
                Conn *c = &conns[k];
                if (c->received != c->checkedReceived) {
                    c->checkedReceived = c->received;
                    c->checkedAt = t;
                } else if (c->received < c->sent && t - c->checkedAt > stallNs) {
                    fail(r, "connection #%d: no echo for %g s, at offset %lld (%lld bytes"
                         " sent not echoed): the server stopped answering",
                         first + k + 1, GRACE_S, (long long)c->received,
                         (long long)(c->sent - c->received));
                    return;
                }
            }
            if (phase == FINISHING && t >= finishDeadline) {
                fail(r, "bytes not echoed %.0f s after the end",
                     (double)(t - measureEnd) / SECOND);
                return;
            }
            int64_t limit = phase == WARMUP ? warmupEnd : phase == MEASURING ? measureEnd
                                                                               : finishDeadline;
            nextTick = t + tick < limit ? t + tick : limit;
            continue;
        }
        int wait = (int)((nextTick - t + 999999) / 1000000);
        int n = epoll_wait(epfd, events, 256, wait);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail(r, "epoll_wait: %s", strerror(errno));
            return;
        }
        for (int e = 0; e < n; e++) {
            Conn *c = &conns[events[e].data.u32];
            uint32_t what = events[e].events;
            if (what & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                ssize_t got = recv(c->fd, buffer, (size_t)receiveSize, 0);
                if (got < 0 && errno != EAGAIN && errno != EINTR) {
                    fail(r, "connection #%d: %s after %lld bytes echoed",
                         first + (int)(c - conns) + 1, strerror(errno),
                         (long long)c->received);
                    return;
                }
                if (got == 0) {
                    fail(r, "connection #%d: closed by the server after %lld of %lld"
                         " bytes echoed", first + (int)(c - conns) + 1,
                         (long long)c->received, (long long)c->sent);
                    return;
                }
                if (got > 0) {
                    int64_t received = c->received + got;
                    if (received > c->sent) {
                        fail(r, "connection #%d: %lld bytes echoed, more than the %lld sent",
                             first + (int)(c - conns) + 1, (long long)received,
                             (long long)c->sent);
                        return;
                    }
                    uint32_t said;
                    if (opt.length &&
                        cutFrames(c, (const unsigned char *)buffer, got, &said)) {
                        fail(r, "connection #%d: reply frame %lld has a length field of"
                             " %lu, not the %d bytes sent", first + (int)(c - conns) + 1,
                             (long long)c->frames + 1, (unsigned long)said, opt.size);
                        return;
                    }
                    if (memcmp(buffer, pattern + c->rpos, (size_t)got)) {
                        int64_t at = 0;
                        while (buffer[at] == pattern[c->rpos + at]) at++;
                        fail(r, "connection #%d: the echo differs from what was sent at"
                             " offset %lld", first + (int)(c - conns) + 1,
                             (long long)(c->received + at));
                        return;
                    }
                    c->rpos += got;
                    if (c->rpos >= block) c->rpos -= block;
                    int64_t before = c->received / size;
                    c->received = received;
                    int64_t done = opt.length ? c->frames : received / size;
                    if (done != before) {
                        t = nowNs();
                        while (before < done) {
                            int64_t end = c->batchEnd[c->batchHead];
                            int64_t at = c->batchAt[c->batchHead];
                            if (end <= done) {
                                c->batchHead = (c->batchHead + 1) % c->batchCap;
                                c->batchCount--;
                            } else {
                                end = done;
                            }
                            histogram[bucketOf(t - at)] += (uint64_t)(end - before);
                            before = end;
                        }
                        if (sending) {
                            int64_t target = done * size + window;
                            if (c->writing) {
                                c->target = target;
                            } else if (target - c->sent >= minimumSend) {
                                c->target = target;
                                SEND(c, t);
                            }
                        }
                    }
                    if (!sending && received == c->target) {
                        if (!--unfinished) goto finished;
                    }
                }
            }
            if (what & EPOLLOUT) SEND(c, nowNs());
        }
    }
finished:
    (void)maxFd;
    for (int k = 0; k < count; k++) {
        struct linger l = {1, 0};
        setsockopt(conns[k].fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        close(conns[k].fd);
    }
    close(epfd);
}

static void printReport(const Result *total, double messagesPerS, double bytesPerS,
                        double cpuPercent) {
    double p50 = percentile(total->histogram, 0.5) / 1000;
    double p90 = percentile(total->histogram, 0.9) / 1000;
    double p99 = percentile(total->histogram, 0.99) / 1000;
    if (opt.json) {
        printf("{\"mode\": \"%s\", \"endpoint\": \"%s\", \"connections\": %d, \"size\": %d,"
               " \"pipeline\": %d, \"duration\": %.6f, \"processes\": %d,"
               " \"messages\": %lld, \"messages_per_s\": %.1f, \"bytes_per_s\": %.1f,"
               " \"latency_us\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f},"
               " \"cpu_percent\": %.1f, \"errors\": %d, \"verified\": %s,"
               "%s \"generator\": \"loadgen.c\"}\n",
               opt.mode, opt.endpoint, opt.connections, opt.size, opt.pipeline,
               total->seconds, opt.processes, (long long)total->messages, messagesPerS,
               bytesPerS, p50, p90, p99, cpuPercent, total->ok ? 0 : 1,
               total->ok ? "true" : "false", opt.length ? " \"framing\": \"length:4\"," : "");
    } else if (total->ok) {
        const char *unit = opt.length ? "frames" : "lines";
        printf("%s, %d connections, %d-byte %s, %d in flight, %.1f s: %.0f %s/s,"
               " %.1f MB/s each way; latency p50 %.1f us, p90 %.1f us, p99 %.1f us;"
               " generator CPU %.0f %%\n",
               opt.mode, opt.connections, opt.size,
               opt.length ? "payloads in length-prefixed frames" : "lines", opt.pipeline,
               total->seconds, messagesPerS, unit, bytesPerS / 1e6, p50, p90, p99,
               cpuPercent);
    }
}

static long number(const char *name, const char *text) {
    char *end;
    long v = strtol(text, &end, 10);
    if (!*text || *end || v < 1) {
        char why[200];
        snprintf(why, sizeof why, "%s: expected a whole number of at least 1, got %s", name, text);
        usage(why);
    }
    return v;
}

static double seconds(const char *name, const char *text, double least) {
    char *end;
    double v = strtod(text, &end);
    if (!*text || *end || v < least) {
        char why[200];
        snprintf(why, sizeof why, "%s: expected seconds, got %s", name, text);
        usage(why);
    }
    return v;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            puts("usage: loadgen HOST:PORT --mode {pingpong,lines,stream} [--connections C]\n"
                 "    [--size S] [--pipeline P] [--duration D] [--warmup W] [--processes N]\n"
                 "    [--framing {line,length:4}] [--json] [--quiet]\n"
                 "The load of `tcpcomm bench`, in C: same options, loads, checks and JSON.\n"
                 "--framing length:4: S-byte payloads, each after a 4-byte big-endian length.");
            return 0;
        }
        if (!strcmp(a, "--json")) opt.json = 1;
        else if (!strcmp(a, "--quiet")) opt.quiet = 1;
        else if (a[0] == '-' && a[1] == '-') {
            if (!v) usage("an option is missing its value");
            i++;
            if (!strcmp(a, "--mode")) opt.mode = v;
            else if (!strcmp(a, "--framing")) {
                if (strcmp(v, "line") && strcmp(v, "length:4"))
                    usage("--framing: loadgen speaks line and length:4 only");
                opt.length = !strcmp(v, "length:4");
            }
            else if (!strcmp(a, "--connections")) opt.connections = (int)number(a, v);
            else if (!strcmp(a, "--size")) opt.size = (int)number(a, v);
            else if (!strcmp(a, "--pipeline")) opt.pipeline = (int)number(a, v);
            else if (!strcmp(a, "--processes")) opt.processes = (int)number(a, v);
            else if (!strcmp(a, "--duration")) opt.duration = seconds(a, v, 1e-3);
            else if (!strcmp(a, "--warmup")) opt.warmup = seconds(a, v, 0);
            else usage("unknown option");
        } else if (!opt.endpoint) opt.endpoint = a;
        else usage("one endpoint only");
    }
    if (!opt.endpoint) usage("no endpoint (HOST:PORT)");
    if (!opt.mode || (strcmp(opt.mode, "pingpong") && strcmp(opt.mode, "lines") &&
                      strcmp(opt.mode, "stream")))
        usage("--mode: choose pingpong, lines or stream");
    if (opt.size < 2 && !opt.length) usage("--size: at least 2");
    struct sockaddr_storage ss;
    socklen_t len;
    if (parseEndpoint(opt.endpoint, &ss, &len))
        usage("endpoint: expected a numeric IPV4:PORT or [IPV6]:PORT");
    if (!opt.pipeline) {
        int unit = opt.size + (opt.length ? LENGTH_HEADER : 0);
        opt.pipeline = !strcmp(opt.mode, "pingpong") ? 1 : !strcmp(opt.mode, "lines") ? 16
                       : (STREAM_WINDOW + unit - 1) / unit;
        if (opt.pipeline < 4 && !strcmp(opt.mode, "stream")) opt.pipeline = 4;
    }
    if (opt.processes > opt.connections) opt.processes = opt.connections;

    Result *results = calloc((size_t)opt.processes, sizeof *results);
    if (opt.processes == 1) {
        runLoad(0, opt.connections, &results[0]);
        if (!opt.quiet) fprintf(stderr, "\r%60s\r", "");
    } else {
        pid_t *pids = calloc((size_t)opt.processes, sizeof *pids);
        int *pipes = calloc((size_t)opt.processes, sizeof *pipes);
        int base = opt.connections / opt.processes, extra = opt.connections % opt.processes;
        for (int p = 0, first = 0; p < opt.processes; p++) {
            int count = base + (p < extra);
            int fds[2];
            if (pipe(fds)) { perror("loadgen: pipe"); return 1; }
            pids[p] = fork();
            if (pids[p] == 0) {
                close(fds[0]);
                Result r;
                runLoad(first, count, &r);
                const char *q = (const char *)&r;
                size_t left = sizeof r;
                while (left) {
                    ssize_t w = write(fds[1], q, left);
                    if (w <= 0) _exit(1);
                    q += w, left -= (size_t)w;
                }
                _exit(0);
            }
            close(fds[1]);
            pipes[p] = fds[0];
            first += count;
        }
        for (int p = 0; p < opt.processes; p++) {
            char *q = (char *)&results[p];
            size_t left = sizeof results[p];
            while (left) {
                ssize_t got = read(pipes[p], q, left);
                if (got <= 0) break;
                q += got, left -= (size_t)got;
            }
            if (left) fail(&results[p], "generator process %d died", p + 1);
            waitpid(pids[p], NULL, 0);
        }
    }
    Result total;
    memset(&total, 0, sizeof total);
    total.ok = 1;
    double messagesPerS = 0, bytesPerS = 0, cpuPercent = 0;
    for (int p = 0; p < opt.processes; p++) {
        Result *r = &results[p];
        if (!r->ok) {
            if (total.ok) fprintf(stderr, "loadgen: error: %s\n", r->error);
            total.ok = 0;
            continue;
        }
        total.messages += r->messages;
        total.bytes += r->bytes;
        if (r->seconds > total.seconds) total.seconds = r->seconds;
        for (int b = 0; b < BUCKETS; b++) total.histogram[b] += r->histogram[b];
        if (r->seconds > 0) {
            messagesPerS += r->messages / r->seconds;
            bytesPerS += r->bytes / r->seconds;
            cpuPercent += 100 * r->cpuSeconds / r->seconds;
        }
    }
    printReport(&total, messagesPerS, bytesPerS, cpuPercent);
    return total.ok ? 0 : 1;
}
