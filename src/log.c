/*
 * Logging: one line to CivetWeb's error_log_file, then the log handler, or
 * stderr when neither is set. Lines below LOG_LEVEL are not made at all.
 * Once mqtt-dispatch runs, every line goes through the event queue
 * (EV_LOG) and is written by mqtt-dispatch, in the order it was logged:
 * no file is opened on paho's threads (which serve every client of the
 * process and call us holding paho's lock) or on a request's thread.
 * Before that (start-up, on the caller's thread) and after it stopped, a
 * line is written on the thread that logs it.
 */
#include "internal.h"

static const char *const cwm_level_names[] = {"error", "warning", "info",
                                              "debug"};
static pthread_mutex_t cwm_logfile_lock = PTHREAD_MUTEX_INITIALIZER;

/* paho trace lines one client may have queued; beyond, they are counted
 * and dropped (a handler that blocks must not make memory grow without
 * bound at LOG_LEVEL debug). */
#define CWM_TRACE_QUEUE 10000

static void cwm_log_sink(const struct mg_mqtt *c, FILE *to, int level,
                         const char *line)
{
	char ts[32];
	time_t now = time(NULL);
	struct tm tm;
	localtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
	fprintf(to, "[%s] [%s] [%s] %s\n", ts, cwm_level_names[level & 3],
	        c->prefix, line);
}

/* 1 when a line of this level is made: LOG_LEVEL (before the options are
 * read, errors only). */
static int cwm_log_wants(const struct mg_mqtt *c, int level)
{
	return level <= c->cfg.log_level;
}

/* Writes one line to the sinks, on this thread. on_log: the handler may
 * be called (not after mqtt-dispatch has stopped: on_disconnect is the
 * last handler of a stop). */
static void cwm_log_write(struct mg_mqtt *c, int level, const char *line,
                          int quiet_stderr, int on_log)
{
	if (c->error_log_file != NULL) {
		pthread_mutex_lock(&cwm_logfile_lock);
		FILE *f = fopen(c->error_log_file, "a");
		if (f != NULL) {
			cwm_log_sink(c, f, level, line);
			fclose(f);
		}
		pthread_mutex_unlock(&cwm_logfile_lock);
	}
	if (c->on_log != NULL) {
		if (on_log)
			c->on_log(c, level, line, c->on_log_ud);
	} else if (c->error_log_file == NULL && !quiet_stderr) {
		cwm_log_sink(c, stderr, level, line);
	}
}

/* [L] 1 when mqtt-dispatch takes a line queued now: it runs, and has not
 * been told to drain and exit. */
static int cwm_log_queueable(const struct mg_mqtt *c)
{
	return c->dispatch_started && !c->dispatch_exit;
}

/* A line as an EV_LOG event, or NULL (out of memory). */
static struct cwm_event *cwm_log_ev(int level, const char *line, int quiet,
                                    int trace)
{
	struct cwm_event *ev = cwm_event_new(EV_LOG, strlen(line) + 1);
	if (ev != NULL) {
		size_t used = 0;
		ev->u.log.level = level;
		ev->u.log.quiet = quiet;
		ev->u.log.trace = trace;
		ev->u.log.text = cwm_event_str(ev, &used, line);
	}
	return ev;
}

/* Makes one line and hands it on. locked: the caller holds c->lock.
 * quiet_stderr: the caller reports the text itself (start-up errors). */
static void cwm_vlog(struct mg_mqtt *c, int locked, int quiet_stderr,
                     int level, const char *fmt, va_list ap)
{
	char line[768];
	if (!cwm_log_wants(c, level))
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\r\n")] = '\0';

	/* dispatch_started is written before mqtt-dispatch exists and after
	 * it is joined, by the thread that starts and stops the client. */
	struct cwm_event *ev =
	    c->dispatch_started ? cwm_log_ev(level, line, quiet_stderr, 0) : NULL;
	if (ev != NULL) {
		if (!locked)
			pthread_mutex_lock(&c->lock);
		int queued = cwm_log_queueable(c);
		if (queued)
			cwm_push_event(c, ev);
		if (!locked)
			pthread_mutex_unlock(&c->lock);
		if (queued)
			return;
		free(ev);
	}
	/* Start-up (the caller's thread), a stopped mqtt-dispatch, or out of
	 * memory: written here. */
	cwm_log_write(c, level, line, quiet_stderr, !c->dispatch_started);
}

/* mqtt-dispatch: writes the line of an EV_LOG event. */
static void cwm_log_event(struct mg_mqtt *c, const struct cwm_event *ev)
{
	if (ev->u.log.trace) {
		atomic_fetch_sub(&c->trace_queued, 1);
		uint_fast64_t lost = atomic_exchange(&c->trace_dropped, 0);
		if (lost > 0) {
			char note[128];
			snprintf(note, sizeof(note),
			         "paho: %llu trace line(s) dropped: more than %d waited "
			         "for the log handler",
			         (unsigned long long)lost, CWM_TRACE_QUEUE);
			cwm_log_write(c, MG_MQTT_LOG_WARNING, note, 0, 1);
		}
	}
	cwm_log_write(c, ev->u.log.level, ev->u.log.text, ev->u.log.quiet, 1);
}

/* A line of paho's trace for this debug client (trace.c, on whichever
 * thread paho traces on, holding paho's locks): queued, never written
 * here, and dropped rather than waited for. */
static void cwm_log_push_trace(struct mg_mqtt *c, const char *line)
{
	if (atomic_load(&c->trace_queued) >= CWM_TRACE_QUEUE) {
		atomic_fetch_add(&c->trace_dropped, 1);
		return;
	}
	struct cwm_event *ev = cwm_log_ev(MG_MQTT_LOG_DEBUG, line, 0, 1);
	if (ev == NULL)
		return;
	pthread_mutex_lock(&c->lock);
	int queued = cwm_log_queueable(c);
	if (queued) {
		atomic_fetch_add(&c->trace_queued, 1);
		cwm_push_event(c, ev);
	}
	pthread_mutex_unlock(&c->lock);
	if (!queued)
		free(ev);
}

/* Defines a printf-like logging function over cwm_vlog (declared in
 * core.h with its format attribute): locked, quiet_stderr as there. */
#define CWM_LOG_FN(name, locked, quiet)                                        \
	static void name(struct mg_mqtt *c, int level, const char *fmt, ...)       \
	{                                                                          \
		va_list ap;                                                            \
		va_start(ap, fmt);                                                     \
		cwm_vlog(c, locked, quiet, level, fmt, ap);                            \
		va_end(ap);                                                            \
	}

/* A line, from any thread without c->lock. */
CWM_LOG_FN(cwm_log, 0, 0)
/* A start-up error: to the log handler and CivetWeb's error log, not to
 * stderr, because mg_mqtt_start() hands the same sentence to its caller. */
CWM_LOG_FN(cwm_log_quiet, 0, 1)
/* The same as cwm_log, for callers that hold c->lock. */
CWM_LOG_FN(cwm_log_locked, 1, 0)
#undef CWM_LOG_FN
