/*
 * What the benchmark receivers share: arrival accounting (count, first and
 * last arrival, broker-to-handler latency from the publisher's timestamp),
 * CPU time and context switches of the process over the run, and the one
 * JSON result line.
 *
 * Under callgrind (valgrind --tool=callgrind) recv_measure_begin() zeroes
 * the instruction counters once the receiver is subscribed and
 * recv_measure_end() dumps them when the last message is in, so the dump
 * holds the message phase only; run.py takes two message counts and divides
 * the difference (start-up and one-off costs cancel out). Outside valgrind
 * the client requests are a few no-op instructions.
 */
#ifndef CWM_BENCH_RECV_COMMON_H
#define CWM_BENCH_RECV_COMMON_H

#include "mqttraw.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <valgrind/callgrind.h>

struct recv_stats {
	long expected;
	atomic_long count;
	uint64_t first_ns, last_ns;
	uint64_t *lat;      /* per message, ns; NULL unless latency is asked */
	pthread_mutex_t mu; /* for first/last/lat: handlers may run on 2 threads */
	pthread_cond_t done;
};

static inline void recv_init(struct recv_stats *s, long expected, int latency)
{
	memset(s, 0, sizeof(*s));
	s->expected = expected;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->done, NULL);
	if (latency)
		s->lat = calloc((size_t)expected, sizeof(uint64_t));
}

/* Called once per message by the handler under test. */
static inline void recv_note(struct recv_stats *s, const void *payload,
                             size_t len)
{
	uint64_t now = raw_now_ns();
	struct raw_stamp st = raw_stamp_read(payload, len);
	long n = atomic_fetch_add(&s->count, 1) + 1;
	if (n == 1 || n == s->expected || s->lat != NULL) {
		pthread_mutex_lock(&s->mu);
		if (n == 1)
			s->first_ns = now;
		if (now > s->last_ns)
			s->last_ns = now;
		if (s->lat != NULL && n <= s->expected)
			s->lat[n - 1] = now - st.sent_ns;
		if (n == s->expected)
			pthread_cond_broadcast(&s->done);
		pthread_mutex_unlock(&s->mu);
	}
}

/* Waits for all messages, or until nothing arrived for idle_ms. */
static inline void recv_wait(struct recv_stats *s, long idle_ms)
{
	long last = -1;
	pthread_mutex_lock(&s->mu);
	while (atomic_load(&s->count) < s->expected) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += idle_ms / 1000;
		ts.tv_nsec += (idle_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&s->done, &s->mu, &ts);
		long now = atomic_load(&s->count);
		if (now == last)
			break; /* idle: the rest is lost */
		last = now;
	}
	pthread_mutex_unlock(&s->mu);
}

/* CPU time (user+sys) and context switches (voluntary+involuntary) of the
 * whole process, every thread included. */
struct recv_usage {
	double cpu;
	long csw, vcsw;
};

static inline struct recv_usage recv_usage_now(void)
{
	struct rusage ru;
	struct recv_usage u;
	getrusage(RUSAGE_SELF, &ru);
	u.cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	        (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	u.csw = ru.ru_nvcsw + ru.ru_nivcsw;
	u.vcsw = ru.ru_nvcsw;
	return u;
}

/* The message phase: from "ready" to the last message (or idle timeout). */
static inline struct recv_usage recv_measure_begin(void)
{
	CALLGRIND_ZERO_STATS;
	return recv_usage_now();
}

static inline struct recv_usage recv_measure_end(void)
{
	struct recv_usage u = recv_usage_now();
	CALLGRIND_DUMP_STATS_AT("messages");
	return u;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* {"count":..,"lost":..,"rate":..,"cpu_ns_per_msg":..,"csw_per_msg":..,
 *  "vcsw_per_msg":.. (the voluntary ones alone), "p50_us":..} */
static inline void recv_report(struct recv_stats *s, struct recv_usage u0,
                               struct recv_usage u1)
{
	long n = atomic_load(&s->count);
	double span = (double)(s->last_ns - s->first_ns) / 1e9;
	printf("{\"count\":%ld,\"lost\":%ld,\"rate\":%.1f,\"cpu_ns_per_msg\":%.1f"
	       ",\"csw_per_msg\":%.4f,\"vcsw_per_msg\":%.4f",
	       n, s->expected - n, span > 0 ? (double)(n - 1) / span : 0.0,
	       n > 0 ? (u1.cpu - u0.cpu) * 1e9 / (double)n : 0.0,
	       n > 0 ? (double)(u1.csw - u0.csw) / (double)n : 0.0,
	       n > 0 ? (double)(u1.vcsw - u0.vcsw) / (double)n : 0.0);
	if (s->lat != NULL && n > 0) {
		size_t m = (size_t)(n < s->expected ? n : s->expected);
		qsort(s->lat, m, sizeof(uint64_t), cmp_u64);
		printf(",\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f",
		       (double)s->lat[m / 2] / 1e3, (double)s->lat[m * 99 / 100] / 1e3,
		       (double)s->lat[m * 999 / 1000] / 1e3);
	}
	printf("}\n");
	fflush(stdout);
}

#endif
