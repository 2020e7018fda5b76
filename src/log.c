/*
 * Logging: one line to the log handler (on mqtt-dispatch), CivetWeb's
 * error_log_file, or stderr when neither is set.
 */
#include "internal.h"

static const char *const cwm_level_names[] = {"error", "warning", "info",
                                              "debug"};
static pthread_mutex_t cwm_logfile_lock = PTHREAD_MUTEX_INITIALIZER;

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

/* Writes one line to the sinks. locked: the caller holds c->lock.
 * quiet_stderr: the caller reports the text itself (start-up errors). */
static void cwm_vlog(struct mg_mqtt *c, int locked, int quiet_stderr,
                     int level, const char *fmt, va_list ap)
{
	char line[768];
	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\r\n")] = '\0';

	if (c->error_log_file != NULL) {
		pthread_mutex_lock(&cwm_logfile_lock);
		FILE *f = fopen(c->error_log_file, "a");
		if (f != NULL) {
			cwm_log_sink(c, f, level, line);
			fclose(f);
		}
		pthread_mutex_unlock(&cwm_logfile_lock);
	}
	if (c->on_log == NULL) {
		if (c->error_log_file == NULL && !quiet_stderr)
			cwm_log_sink(c, stderr, level, line);
		return;
	}
	if (!c->dispatch_started) {
		c->on_log(c, level, line, c->on_log_ud); /* start-up: caller thread */
		return;
	}
	struct cwm_event *ev = cwm_event_new(EV_LOG, strlen(line) + 1);
	if (ev == NULL)
		return;
	size_t used = 0;
	ev->u.log.level = level;
	ev->u.log.text = cwm_event_str(ev, &used, line);
	if (!locked)
		pthread_mutex_lock(&c->lock);
	cwm_push_event(c, ev);
	if (!locked)
		pthread_mutex_unlock(&c->lock);
}

static void cwm_log(struct mg_mqtt *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cwm_log(struct mg_mqtt *c, int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cwm_vlog(c, 0, 0, level, fmt, ap);
	va_end(ap);
}

/* A start-up error: to the log handler and CivetWeb's error log, not to
 * stderr, because mg_mqtt_start() hands the same sentence to its caller. */
static void cwm_log_quiet(struct mg_mqtt *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cwm_log_quiet(struct mg_mqtt *c, int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cwm_vlog(c, 0, 1, level, fmt, ap);
	va_end(ap);
}

/* The same, for callers that hold c->lock. */
static void cwm_log_locked(struct mg_mqtt *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cwm_log_locked(struct mg_mqtt *c, int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cwm_vlog(c, 1, 0, level, fmt, ap);
	va_end(ap);
}
