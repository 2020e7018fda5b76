/* The test runner (main) and the helpers of util.h. */
#include "util.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- registry and runner ---------------------------------------------- */

struct th_test {
	const char *name, *file;
	th_fn fn;
	int timeout;
};
static struct th_test th_tests[512];
static int th_ntests;
static const char *th_current;

void th_register(const char *name, th_fn fn, int timeout_s, const char *file)
{
	if (th_ntests < (int)(sizeof(th_tests) / sizeof(th_tests[0])))
		th_tests[th_ntests++] = (struct th_test){name, file, fn, timeout_s};
}

int64_t th_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void th_sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

int th_timeout_scale(void)
{
	const char *s = getenv("TEST_TIMEOUT_SCALE");
	int v = s != NULL ? atoi(s) : 1;
	return v > 0 ? v : 1;
}

/* Child processes of the running test, killed when it ends. */
static pid_t th_pids[256];
static int th_npids;
static char th_dirbuf[256];

static void th_track(pid_t pid)
{
	if (th_npids < (int)(sizeof(th_pids) / sizeof(th_pids[0])))
		th_pids[th_npids++] = pid;
}

static void th_untrack(pid_t pid)
{
	for (int i = 0; i < th_npids; i++)
		if (th_pids[i] == pid) {
			th_pids[i] = th_pids[--th_npids];
			return;
		}
}

/* Async-signal-safe: kill and reap every tracked child. */
static void th_kill_children(void)
{
	for (int i = 0; i < th_npids; i++)
		kill(th_pids[i], SIGKILL);
	for (int i = 0; i < th_npids; i++)
		waitpid(th_pids[i], NULL, 0);
	th_npids = 0;
}

static void th_rmtree(const char *dir)
{
	if (dir[0] == '\0' || getenv("TEST_KEEP") != NULL)
		return;
	const char *argv[] = {"rm", "-rf", dir, NULL};
	pid_t pid = fork();
	if (pid == 0) {
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
}

static void th_on_alarm(int sig)
{
	static const char msg[] = "    timeout: the test ran out of time\n";
	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0) {
	}
	th_kill_children();
	_exit(3);
}

void th_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "    %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	if (th_dirbuf[0] != '\0')
		fprintf(stderr, "    test files kept in %s\n", th_dirbuf);
	th_kill_children();
	exit(1);
}

static int th_run_one(const struct th_test *t)
{
	int scale = th_timeout_scale(), status = 0;
	int64_t start = th_now_ms(), limit = (int64_t)(t->timeout * scale + 15) * 1000;
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid == 0) {
		setpgid(0, 0);
		th_current = t->name;
		signal(SIGALRM, th_on_alarm);
		signal(SIGPIPE, SIG_IGN);
		alarm((unsigned)(t->timeout * scale));
		t->fn();
		th_kill_children();
		th_rmtree(th_dirbuf);
		exit(0);
	}
	if (pid < 0) {
		perror("fork");
		return 0;
	}
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		if (th_now_ms() - start > limit) {
			/* The child's own alarm failed: kill its whole group. */
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			fprintf(stderr, "    hard timeout\n");
			break;
		}
		th_sleep_ms(10);
	}
	/* A test that crashed or was aborted by a sanitizer never ran its own
	 * cleanup: whatever it started is still in its process group. */
	kill(-pid, SIGKILL);
	double secs = (double)(th_now_ms() - start) / 1000.0;
	int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	if (ok)
		printf("ok   %-52s %6.2f s\n", t->name, secs);
	else if (WIFSIGNALED(status))
		printf("FAIL %-52s %6.2f s (signal %d)\n", t->name, secs,
		       WTERMSIG(status));
	else
		printf("FAIL %-52s %6.2f s (exit %d)\n", t->name, secs,
		       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	fflush(stdout);
	return ok;
}

int main(int argc, char **argv)
{
	int passed = 0, failed = 0;
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 0; i < th_ntests; i++) {
		if (argc > 1 && strstr(th_tests[i].name, argv[1]) == NULL)
			continue;
		if (th_run_one(&th_tests[i]))
			passed++;
		else
			failed++;
	}
	printf("%d passed, %d failed\n", passed, failed);
	return failed > 0 ? 1 : 0;
}

/* ---- files and processes ------------------------------------------------ */

const char *th_dir(void)
{
	if (th_dirbuf[0] == '\0') {
		snprintf(th_dirbuf, sizeof(th_dirbuf), "/tmp/cwm-%s-XXXXXX",
		         th_current != NULL ? th_current : "test");
		if (mkdtemp(th_dirbuf) == NULL)
			th_fail(__FILE__, __LINE__, "mkdtemp: %s", strerror(errno));
		chmod(th_dirbuf, 0755);
	}
	return th_dirbuf;
}

const char *th_path(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", th_dir(), name);
	return buf;
}

void th_chmod_world(const char *path)
{
	chmod(path, 0777);
}

pid_t th_spawn(const char *const argv[], const char *out)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0)
		th_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
	if (pid == 0) {
		int fd = open(out != NULL ? out : "/dev/null",
		              O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		int in = open("/dev/null", O_RDONLY);
		if (in >= 0) {
			dup2(in, 0);
			close(in);
		}
		signal(SIGPIPE, SIG_DFL);
		alarm(0);
		execvp(argv[0], (char *const *)argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	th_track(pid);
	return pid;
}

int th_wait_exit(pid_t pid, int ms)
{
	int status;
	int64_t until = th_now_ms() + (int64_t)ms * th_timeout_scale();
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid) {
			th_untrack(pid);
			if (WIFEXITED(status))
				return WEXITSTATUS(status);
			return 128 + WTERMSIG(status);
		}
		if (r < 0) {
			th_untrack(pid);
			return -2;
		}
		if (th_now_ms() >= until)
			return -1;
		th_sleep_ms(5);
	}
}

void th_kill(pid_t pid, int sig)
{
	if (pid <= 0)
		return;
	kill(pid, sig);
	if (th_wait_exit(pid, 5000) == -1) {
		kill(pid, SIGKILL);
		th_wait_exit(pid, 5000);
	}
}

int th_run(const char *const argv[], const char *out, int ms)
{
	pid_t pid = th_spawn(argv, out);
	int rc = th_wait_exit(pid, ms);
	if (rc == -1) {
		th_kill(pid, SIGKILL);
		th_fail(__FILE__, __LINE__, "%s did not finish in %d ms", argv[0], ms);
	}
	return rc;
}

int th_free_port(void)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) != 0)
		th_fail(__FILE__, __LINE__, "no free port: %s", strerror(errno));
	close(fd);
	return ntohs(a.sin_port);
}

int th_listen(int *port, int backlog)
{
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ASSERT(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ASSERT_EQ(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ASSERT_EQ(listen(fd, backlog), 0);
	ASSERT_EQ(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

int th_tcp_connect(int port)
{
	struct sockaddr_in a;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

int th_send_all(int fd, const void *p, size_t n)
{
	const char *b = p;
	while (n > 0) {
		ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		b += k;
		n -= (size_t)k;
	}
	return 0;
}

int th_sub_lines(const struct th_sub *s, char **text)
{
	int n;
	char *t = th_sub_messages(s, &n);
	if (text != NULL)
		*text = t;
	else
		free(t);
	return n;
}

int th_wait_port(int port, int ms)
{
	int64_t until = th_now_ms() + (int64_t)ms * th_timeout_scale();
	do {
		struct sockaddr_in a;
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		memset(&a, 0, sizeof(a));
		a.sin_family = AF_INET;
		a.sin_port = htons((uint16_t)port);
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
		if (fd >= 0)
			close(fd);
		if (ok)
			return 1;
		th_sleep_ms(20);
	} while (th_now_ms() < until);
	return 0;
}

char *th_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t n = 0, cap = 0;
	if (f != NULL) {
		for (;;) {
			if (cap - n < 4096) {
				cap = cap * 2 + 8192;
				buf = realloc(buf, cap);
				if (buf == NULL)
					th_fail(__FILE__, __LINE__, "out of memory");
			}
			size_t r = fread(buf + n, 1, cap - n - 1, f);
			n += r;
			if (r == 0)
				break;
		}
		fclose(f);
	}
	if (buf == NULL && (buf = malloc(1)) == NULL)
		th_fail(__FILE__, __LINE__, "out of memory");
	buf[n] = '\0';
	if (len != NULL)
		*len = n;
	return buf;
}

void th_write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (f == NULL || fputs(text, f) < 0)
		th_fail(__FILE__, __LINE__, "cannot write %s", path);
	fclose(f);
	chmod(path, 0644);
}

int th_count_lines(const char *path, const char *needle)
{
	char *text = th_read_file(path, NULL), *line, *save = NULL;
	int n = 0;
	for (line = strtok_r(text, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save))
		n += strstr(line, needle) != NULL;
	free(text);
	return n;
}

/* ---- brokers -------------------------------------------------------------- */

static int th_broker_count;

static void th_subst(char *out, size_t len, const char *in,
                     const struct th_broker *b)
{
	size_t o = 0;
	while (*in != '\0' && o + 1 < len) {
		const char *rep = NULL;
		char num[16];
		size_t skip = 0;
		if (strncmp(in, "{PORT}", 6) == 0) {
			snprintf(num, sizeof(num), "%d", b->port);
			rep = num;
			skip = 6;
		} else if (strncmp(in, "{PORT2}", 7) == 0) {
			snprintf(num, sizeof(num), "%d", b->port2);
			rep = num;
			skip = 7;
		} else if (strncmp(in, "{PORT3}", 7) == 0) {
			snprintf(num, sizeof(num), "%d", b->port3);
			rep = num;
			skip = 7;
		} else if (strncmp(in, "{DIR}", 5) == 0) {
			rep = th_dir();
			skip = 5;
		}
		if (rep != NULL) {
			o += (size_t)snprintf(out + o, len - o, "%s", rep);
			in += skip;
		} else {
			out[o++] = *in++;
		}
	}
	out[o < len ? o : len - 1] = '\0';
}

static void th_broker_launch(struct th_broker *b)
{
	const char *argv[] = {"mosquitto", "-c", b->conf, NULL};
	b->pid = th_spawn(argv, b->log);
	int ok = th_wait_port(b->port, 10000) &&
	         (b->port2 == 0 || th_wait_port(b->port2, 10000)) &&
	         (b->port3 == 0 || th_wait_port(b->port3, 10000));
	if (!ok) {
		char *log = th_read_file(b->log, NULL);
		th_fail(__FILE__, __LINE__, "mosquitto did not start: %s", log);
	}
}

void th_broker_start(struct th_broker *b, const char *conf)
{
	char name[64], text[8192];
	if (conf == NULL)
		conf = "listener {PORT} 127.0.0.1\nallow_anonymous true\n";
	memset(b, 0, sizeof(*b));
	b->n = ++th_broker_count;
	b->port = th_free_port();
	if (strstr(conf, "{PORT2}") != NULL)
		do
			b->port2 = th_free_port();
		while (b->port2 == b->port);
	if (strstr(conf, "{PORT3}") != NULL)
		do
			b->port3 = th_free_port();
		while (b->port3 == b->port || b->port3 == b->port2);
	th_subst(text, sizeof(text), conf, b);
	/* Logs to stderr (captured), no persistence unless conf asks. */
	strncat(text, "\nlog_dest stderr\nlog_type all\n",
	        sizeof(text) - strlen(text) - 1);
	snprintf(name, sizeof(name), "mosquitto-%d.conf", b->n);
	th_path(b->conf, sizeof(b->conf), name);
	snprintf(name, sizeof(name), "mosquitto-%d.log", b->n);
	th_path(b->log, sizeof(b->log), name);
	th_write_file(b->conf, text);
	snprintf(b->url, sizeof(b->url), "tcp://127.0.0.1:%d", b->port);
	th_broker_launch(b);
}

void th_broker_start_password(struct th_broker *b, const char *user,
                              const char *password)
{
	char conf[1024], pw[512];
	th_path(pw, sizeof(pw), "passwd");
	const char *mk[] = {"mosquitto_passwd", "-b", "-c", pw, user, password,
	                    NULL};
	ASSERT_EQ(th_run(mk, NULL, 10000), 0);
	th_chmod_world(pw);
	snprintf(conf, sizeof(conf),
	         "listener {PORT} 127.0.0.1\nallow_anonymous false\n"
	         "password_file %s\n",
	         pw);
	th_broker_start(b, conf);
}

void th_broker_later(struct th_broker *b, const char *conf)
{
	th_broker_start(b, conf);
	th_broker_stop(b);
}

void th_two_brokers_start(struct th_broker *a, struct th_broker *b,
                          char *urls, size_t len)
{
	th_broker_start(a, NULL);
	th_broker_start(b, NULL);
	snprintf(urls, len, "%s,%s", a->url, b->url);
}

void th_tls_broker_start(struct th_broker *b, const char *cert,
                         int require_cert)
{
	char conf[1024];
	snprintf(conf, sizeof(conf),
	         "listener {PORT} 127.0.0.1\nallow_anonymous true\n"
	         "cafile {DIR}/ca.crt\ncertfile {DIR}/%s.crt\n"
	         "keyfile {DIR}/%s.key\nrequire_certificate %s\n",
	         cert, cert, require_cert ? "true" : "false");
	th_make_certs();
	th_broker_start(b, conf);
	snprintf(b->url, sizeof(b->url), "mqtts://127.0.0.1:%d", b->port);
	th_path(b->ca, sizeof(b->ca), "ca.crt");
}

struct mg_context *th_civetweb_start(const char *name, char *log, size_t len)
{
	char port[32];
	th_path(log, len, name);
	snprintf(port, sizeof(port), "127.0.0.1:%d", th_free_port());
	const char *cw[] = {"listening_ports", port, "error_log_file", log, NULL};
	struct mg_context *ctx = mg_start(NULL, NULL, cw);
	if (ctx == NULL)
		th_fail(__FILE__, __LINE__, "CivetWeb did not start on %s", port);
	return ctx;
}

void th_broker_stop(struct th_broker *b)
{
	th_kill(b->pid, SIGTERM);
	b->pid = 0;
}

void th_broker_kill9(struct th_broker *b)
{
	th_kill(b->pid, SIGKILL);
	b->pid = 0;
}

void th_broker_restart(struct th_broker *b)
{
	if (b->pid > 0)
		th_broker_stop(b);
	th_broker_launch(b);
}

/* Modification time of a file in ns; 0 when it does not exist. */
static long long th_mtime_ns(const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0)
		return 0;
	return (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
}

void th_persistent_broker_start(struct th_broker *b, const char *extra)
{
	char dir[512], conf[2048];
	th_path(dir, sizeof(dir), "bdata");
	mkdir(dir, 0777);
	th_chmod_world(dir);
	snprintf(conf, sizeof(conf),
	         "listener {PORT} 127.0.0.1\nallow_anonymous true\n"
	         "max_queued_messages 0\nmax_inflight_messages 0\n"
	         "persistence true\npersistence_location {DIR}/bdata/\n"
	         "autosave_interval 1\n%s",
	         extra != NULL ? extra : "");
	th_broker_start(b, conf);
}

void th_broker_wait_saved(void)
{
	char db[512];
	th_path(db, sizeof(db), "bdata/mosquitto.db");
	long long t0 = th_mtime_ns(db);
	ASSERT(WAIT_UNTIL(th_mtime_ns(db) != t0 && th_mtime_ns(db) != 0, 10000));
	/* A save in progress: wait for the next one too. */
	t0 = th_mtime_ns(db);
	ASSERT(WAIT_UNTIL(th_mtime_ns(db) != t0, 10000));
}

pid_t th_quiet_broker_start(int *port, const char *extra)
{
	char conf[512], log[512], text[1024];
	static int n;
	char name[64];
	*port = th_free_port();
	snprintf(text, sizeof(text),
	         "listener %d 127.0.0.1\nallow_anonymous true\n"
	         "log_dest stderr\nlog_type error\nlog_type warning\n"
	         "log_type notice\n%s",
	         *port, extra != NULL ? extra : "");
	snprintf(name, sizeof(name), "quiet-%d.conf", ++n);
	th_path(conf, sizeof(conf), name);
	th_write_file(conf, text);
	snprintf(name, sizeof(name), "quiet-%d.log", n);
	th_path(log, sizeof(log), name);
	const char *argv[] = {"mosquitto", "-c", conf, NULL};
	pid_t pid = th_spawn(argv, log);
	if (!th_wait_port(*port, 10000))
		th_fail(__FILE__, __LINE__, "mosquitto did not start");
	return pid;
}

/* ---- mosquitto_sub / mosquitto_pub ---------------------------------------- */

static int th_split_args(char *extra, const char **argv, int n, int max)
{
	for (char *save = NULL, *t = extra != NULL ? strtok_r(extra, " ", &save)
	                                           : NULL;
	     t != NULL && n < max; t = strtok_r(NULL, " ", &save))
		argv[n++] = t;
	return n;
}

/* The arguments mosquitto_sub and mosquitto_pub share: the broker's
 * address and the topic, after prog, from argv[n]; returns the new n. */
static int th_mosq_args(const char **argv, int n, const char *prog,
                        const char *port, const char *topic)
{
	const char *const common[] = {prog, "-h", "127.0.0.1", "-p", port,
	                              "-t", topic};
	for (size_t i = 0; i < sizeof(common) / sizeof(common[0]); i++)
		argv[n++] = common[i];
	return n;
}

void th_sub_start(struct th_sub *s, const struct th_broker *b,
                  const char *topic, int count, const char *extra)
{
	static int nsubs;
	char port[16], cnt[16], name[64], ex[512];
	const char *argv[48];
	int n = 0;

	snprintf(port, sizeof(port), "%d", b->port);
	snprintf(cnt, sizeof(cnt), "%d", count);
	snprintf(name, sizeof(name), "sub-%d.out", ++nsubs);
	snprintf(ex, sizeof(ex), "%s", extra != NULL ? extra : "");
	th_path(s->out, sizeof(s->out), name);
	/* Line-buffered, so that the SUBACK line shows up at once. */
	argv[n++] = "stdbuf";
	argv[n++] = "-oL";
	n = th_mosq_args(argv, n, "mosquitto_sub", port, topic);
	argv[n++] = "-v";
	argv[n++] = "-d";
	if (count > 0) {
		argv[n++] = "-C";
		argv[n++] = cnt;
	}
	n = th_split_args(ex, argv, n, 46);
	argv[n] = NULL;
	s->pid = th_spawn(argv, s->out);
	/* -d prints the SUBACK: from then on nothing is missed. */
	int64_t until = th_now_ms() + 10000 * th_timeout_scale();
	while (th_count_lines(s->out, "received SUBACK") == 0) {
		if (th_now_ms() > until)
			th_fail(__FILE__, __LINE__, "mosquitto_sub got no SUBACK");
		th_sleep_ms(5);
	}
}

void th_broker_sub_start(struct th_broker *b, const char *conf,
                         struct th_sub *s, const char *topic, int count,
                         const char *extra)
{
	th_broker_start(b, conf);
	th_sub_start(s, b, topic, count, extra);
}

int th_sub_wait(struct th_sub *s, int ms)
{
	int rc = th_wait_exit(s->pid, ms);
	if (rc != -1)
		s->pid = 0;
	return rc;
}

void th_sub_stop(struct th_sub *s)
{
	if (s->pid > 0)
		th_kill(s->pid, SIGTERM);
	s->pid = 0;
}

char *th_sub_messages(const struct th_sub *s, int *n)
{
	char *text = th_read_file(s->out, NULL), *line, *save = NULL;
	size_t len = strlen(text);
	char *out = malloc(len + 1);
	size_t o = 0;
	int count = 0;
	if (out == NULL)
		th_fail(__FILE__, __LINE__, "out of memory");
	for (line = strtok_r(text, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "Client ", 7) == 0 ||
		    strncmp(line, "Subscribed (mid", 15) == 0)
			continue;
		o += (size_t)sprintf(out + o, "%s%s", count > 0 ? "\n" : "", line);
		count++;
	}
	out[o] = '\0';
	free(text);
	if (n != NULL)
		*n = count;
	return out;
}

char *th_sub_done(struct th_sub *s, int ms, int *n)
{
	int rc = th_sub_wait(s, ms);
	if (rc != 0)
		th_fail(__FILE__, __LINE__, "mosquitto_sub: status %d (%s)", rc,
		        rc == -1 ? "still running" : "exited");
	return th_sub_messages(s, n);
}

void th_sub_expect(struct th_sub *s, int ms, const char *want)
{
	char *got = th_sub_done(s, ms, NULL);
	if (strcmp(got, want) != 0)
		th_fail(__FILE__, __LINE__, "mosquitto_sub got \"%s\", not \"%s\"",
		        got, want);
	free(got);
}

void th_sub_expect_seq(struct th_sub *s, int ms, const char *prefix, int n)
{
	int got;
	char *text = th_sub_done(s, ms, &got), line[256];
	if (got != n)
		th_fail(__FILE__, __LINE__, "%d messages, wanted %d: %s", got, n, text);
	for (int i = 0; i < n; i++) {
		snprintf(line, sizeof(line), "%s%d", prefix, i);
		if (strstr(text, line) == NULL)
			th_fail(__FILE__, __LINE__, "no \"%s\" in: %s", line, text);
	}
	free(text);
}

int th_sub_has(const struct th_sub *s, const char *needle)
{
	char *got = th_sub_messages(s, NULL);
	int found = strstr(got, needle) != NULL;
	free(got);
	return found;
}

void th_pub(const struct th_broker *b, const char *topic, const char *msg,
            int qos, int retain, const char *extra)
{
	char port[16], q[4], ex[512], outp[512];
	const char *argv[48];
	int n = 0;
	snprintf(port, sizeof(port), "%d", b->port);
	snprintf(q, sizeof(q), "%d", qos);
	snprintf(ex, sizeof(ex), "%s", extra != NULL ? extra : "");
	n = th_mosq_args(argv, 0, "mosquitto_pub", port, topic);
	argv[n++] = "-m";
	argv[n++] = msg;
	argv[n++] = "-q";
	argv[n++] = q;
	if (retain)
		argv[n++] = "-r";
	n = th_split_args(ex, argv, n, 46);
	argv[n] = NULL;
	th_path(outp, sizeof(outp), "pub.out");
	int rc = th_run(argv, outp, 10000);
	if (rc != 0) {
		char *log = th_read_file(outp, NULL);
		th_fail(__FILE__, __LINE__, "mosquitto_pub exited %d: %s", rc, log);
	}
}

/* ---- certificates --------------------------------------------------------- */

static void th_sh(const char *script)
{
	char out[512];
	const char *argv[] = {"sh", "-ec", script, NULL};
	th_path(out, sizeof(out), "openssl.log");
	if (th_run(argv, out, 60000) != 0) {
		char *log = th_read_file(out, NULL);
		th_fail(__FILE__, __LINE__, "certificate script failed: %s", log);
	}
}

void th_make_certs(void)
{
	char script[4096], done[512];
	if (access(th_path(done, sizeof(done), "ca.crt"), F_OK) == 0)
		return;
	snprintf(
	    script, sizeof(script),
	    "cd '%s'\n"
	    "q='-loglevel error'\n"
	    "mk_ca() { openssl req -x509 -newkey rsa:2048 -nodes -days 2 "
	    "-subj \"/CN=$1\" -keyout $2.key -out $2.crt 2>/dev/null; }\n"
	    "mk_ca 'cwm test CA' ca\n"
	    "mk_ca 'cwm other CA' other-ca\n"
	    "sign() { openssl req -newkey rsa:2048 -nodes -subj \"/CN=$2\" "
	    "-keyout $1.key -out $1.csr 2>/dev/null\n"
	    "  printf '%%s\\n' \"$3\" > $1.ext\n"
	    "  openssl x509 -req -in $1.csr -CA ca.crt -CAkey ca.key "
	    "-CAcreateserial -days 2 -extfile $1.ext -out $1.crt 2>/dev/null; }\n"
	    "sign server localhost 'subjectAltName=IP:127.0.0.1,DNS:localhost'\n"
	    "sign wrong-host example.invalid 'subjectAltName=DNS:example.invalid'\n"
	    "sign client cwm-client 'extendedKeyUsage=clientAuth'\n"
	    "openssl pkey -in client.key -aes256 -passout pass:s3cret-pass "
	    "-out client-enc.key\n"
	    "chmod 644 *.key *.crt\n",
	    th_dir());
	th_sh(script);
}

/* ---- raw TCP clients ------------------------------------------------------ */

struct th_raw *th_raw_connect(int port, int rcvbuf)
{
	struct th_raw *r = calloc(1, sizeof(*r));
	struct sockaddr_in a;
	ASSERT(r != NULL);
	r->fd = socket(AF_INET, SOCK_STREAM, 0);
	ASSERT(r->fd >= 0);
	if (rcvbuf > 0)
		ASSERT_EQ(
		    setsockopt(r->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)),
		    0);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ASSERT_EQ(connect(r->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return r;
}

void th_raw_close(struct th_raw *r)
{
	if (r != NULL) {
		close(r->fd);
		free(r);
	}
}

void th_raw_send(struct th_raw *r, const void *data, size_t n)
{
	const char *p = data;
	while (n > 0) {
		ssize_t k = send(r->fd, p, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		ASSERT_GT(k, 0);
		p += k;
		n -= (size_t)k;
	}
}

int th_raw_fill(struct th_raw *r, int ms)
{
	struct pollfd p = {r->fd, POLLIN, 0};
	if (r->len == sizeof(r->buf))
		return -1;
	if (poll(&p, 1, ms * th_timeout_scale()) <= 0)
		return -1;
	ssize_t k = recv(r->fd, r->buf + r->len, sizeof(r->buf) - r->len, 0);
	if (k <= 0)
		return 0;
	r->len += (size_t)k;
	return (int)k;
}

void th_raw_consume(struct th_raw *r, size_t n)
{
	memmove(r->buf, r->buf + n, r->len - n);
	r->len -= n;
}

/* ---- the example server ---------------------------------------------------- */

const char *th_example_bin(void)
{
	const char *b = getenv("EXAMPLE_BIN");
	return b != NULL ? b : "example/civetweb-mqtt";
}

void th_xsrv_launch(struct th_xsrv *s)
{
	static int n;
	char name[64];
	snprintf(name, sizeof(name), "server-%d.log", ++n);
	th_path(s->log, sizeof(s->log), name);
	const char *argv[] = {th_example_bin(), s->conf, NULL};
	s->pid = th_spawn(argv, s->log);
	if (!th_wait_port(s->port, 15000)) {
		char *log = th_read_file(s->log, NULL);
		th_fail(__FILE__, __LINE__, "server did not start: %s", log);
	}
}

void th_xsrv_start(struct th_xsrv *s, const char *mqtt, const char *civetweb)
{
	char text[4096], name[64];
	static int n;
	s->port = th_free_port();
	snprintf(text, sizeof(text),
	         "listening_ports 127.0.0.1:%d\n"
	         "document_root .\n"
	         "enable_keep_alive yes\n"
	         "tcp_nodelay 1\n"
	         "%s\n%s",
	         s->port, civetweb != NULL ? civetweb : "", mqtt);
	snprintf(name, sizeof(name), "civetweb-%d.conf", ++n);
	th_path(s->conf, sizeof(s->conf), name);
	th_write_file(s->conf, text);
	th_xsrv_launch(s);
}

void th_xsrv_start_broker(struct th_xsrv *s, int broker_port, const char *mqtt,
                          const char *civetweb)
{
	char text[4096];
	snprintf(text, sizeof(text), "MQTT_BROKER_URL tcp://127.0.0.1:%d\n%s",
	         broker_port, mqtt);
	th_xsrv_start(s, text, civetweb);
}
