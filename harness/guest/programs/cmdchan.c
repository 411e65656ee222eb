/*
 * cmdchan: the guest end of the harness's command channel (harness/vm/channel.py).
 *
 * Runs for the life of one SSH exec channel, reading framed requests on stdin and writing
 * framed replies on stdout, so a guest command costs one spawn instead of a dropbear fork,
 * a login shell and a channel set-up each.
 *
 *   start:    "NHCHAN 1\n"
 *   request:  "C SEQ CMDLEN STDINLEN TIMEOUT_MS\n" CMD STDIN
 *   reply:    "R SEQ STATUS SIGNAL OUTLEN ERRLEN FLAG\n" STDOUT STDERR
 *
 * Each command runs as `/bin/sh -c CMD` in a session of its own (setsid), with STDIN on its
 * standard input (closed when used up) and its own stdout and stderr pipes. STATUS is its exit
 * status, or 128 + N when signal N killed it (SIGNAL is then N, else 0). FLAG is "t" when it
 * ran past TIMEOUT_MS (0: no limit) and its session was killed with SIGKILL, else "-".
 * Output a background process writes after the command exited is not waited for.
 * A malformed request ends the program (exit 2); EOF on stdin ends it (exit 0).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define MAX_HEADER 256
#define MAX_PAYLOAD (256u << 20)

struct buf {
	char *data;
	size_t len, cap;
};

static unsigned char inbuf[65536];
static size_t inpos, inlen;

static int fill(void)
{
	ssize_t n;
	do
		n = read(0, inbuf, sizeof(inbuf));
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return 0;
	inpos = 0;
	inlen = (size_t)n;
	return 1;
}

/* A header line without its newline; 0 at EOF. */
static int read_line(char *line, size_t size)
{
	size_t n = 0;
	for (;;) {
		if (inpos == inlen && !fill())
			return 0;
		char c = (char)inbuf[inpos++];
		if (c == '\n')
			break;
		if (n + 1 >= size)
			return -1;
		line[n++] = c;
	}
	line[n] = 0;
	return 1;
}

static int read_exact(char *dst, size_t len)
{
	while (len) {
		if (inpos == inlen && !fill())
			return 0;
		size_t take = inlen - inpos < len ? inlen - inpos : len;
		memcpy(dst, inbuf + inpos, take);
		inpos += take;
		dst += take;
		len -= take;
	}
	return 1;
}

static void write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			exit(3); /* the channel is gone */
		}
		p += n;
		len -= (size_t)n;
	}
}

static void append(struct buf *b, const char *p, size_t len)
{
	if (b->len + len > b->cap) {
		size_t cap = b->cap ? b->cap : 65536;
		while (cap < b->len + len)
			cap *= 2;
		b->data = realloc(b->data, cap);
		if (!b->data)
			exit(4);
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, len);
	b->len += len;
}

/* Read what fd has now; 0 at EOF or error (the fd is closed then). */
static int drain(int *fd, struct buf *b)
{
	char chunk[65536];
	for (;;) {
		ssize_t n = read(*fd, chunk, sizeof(chunk));
		if (n > 0) {
			append(b, chunk, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 1;
		close(*fd);
		*fd = -1;
		return 0;
	}
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void run(unsigned long seq, const char *cmd, const char *in, size_t inlen_, long timeout_ms, int sigfd)
{
	int pin[2], pout[2], perr[2];
	if (pipe2(pin, O_CLOEXEC) || pipe2(pout, O_CLOEXEC) || pipe2(perr, O_CLOEXEC))
		exit(5);
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none;
	sigemptyset(&none);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pin[0], 0);
	posix_spawn_file_actions_adddup2(&fa, pout[1], 1);
	posix_spawn_file_actions_adddup2(&fa, perr[1], 2);
	posix_spawnattr_init(&at);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	posix_spawnattr_setsigmask(&at, &none);
	sigset_t def;
	sigemptyset(&def);
	sigaddset(&def, SIGPIPE);
	sigaddset(&def, SIGCHLD);
	posix_spawnattr_setsigdefault(&at, &def);
	char *argv[] = {"sh", "-c", (char *)cmd, NULL};
	pid_t pid;
	int err = posix_spawn(&pid, "/bin/sh", &fa, &at, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	close(pin[0]);
	close(pout[1]);
	close(perr[1]);
	struct buf out = {0}, errb = {0};
	int status = 127, sig = 0, timed_out = 0, exited = 0;
	int fin = pin[1], fout = pout[0], ferr = perr[0];
	fcntl(fin, F_SETFL, O_NONBLOCK);
	fcntl(fout, F_SETFL, O_NONBLOCK);
	fcntl(ferr, F_SETFL, O_NONBLOCK);
	size_t fed = 0;
	if (err) {
		char msg[128];
		int n = snprintf(msg, sizeof(msg), "cmdchan: cannot run /bin/sh: %s\n", strerror(err));
		append(&errb, msg, (size_t)n);
		exited = 1;
	}
	if (fed == inlen_) {
		close(fin);
		fin = -1;
	}
	long long deadline = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
	while (!exited || fout >= 0 || ferr >= 0) {
		if (exited) { /* the command is gone: take what it left, not what its children may write later */
			if (fout >= 0)
				drain(&fout, &out);
			if (ferr >= 0)
				drain(&ferr, &errb);
			break;
		}
		struct pollfd p[4];
		int n = 0, iin = -1, iout = -1, ierr = -1;
		p[n].fd = sigfd, p[n].events = POLLIN, n++;
		if (fin >= 0)
			p[n].fd = fin, p[n].events = POLLOUT, iin = n++;
		if (fout >= 0)
			p[n].fd = fout, p[n].events = POLLIN, iout = n++;
		if (ferr >= 0)
			p[n].fd = ferr, p[n].events = POLLIN, ierr = n++;
		int wait_ms = -1;
		if (deadline) {
			long long left = deadline - now_ms();
			wait_ms = left > 0 ? (int)left : 0;
		}
		int r = poll(p, (nfds_t)n, wait_ms);
		if (r < 0 && errno != EINTR)
			exit(6);
		if (r == 0 && deadline && now_ms() >= deadline && !timed_out) {
			timed_out = 1;
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			deadline = 0;
		}
		if (r <= 0)
			continue;
		if (iin >= 0 && p[iin].revents) {
			ssize_t w = write(fin, in + fed, inlen_ - fed);
			if (w > 0)
				fed += (size_t)w;
			if ((w < 0 && errno != EAGAIN && errno != EINTR) || fed == inlen_) {
				close(fin);
				fin = -1;
			}
		}
		if (iout >= 0 && p[iout].revents)
			drain(&fout, &out);
		if (ierr >= 0 && p[ierr].revents)
			drain(&ferr, &errb);
		if (p[0].revents) {
			struct signalfd_siginfo si;
			while (read(sigfd, &si, sizeof(si)) > 0)
				;
			int ws;
			if (waitpid(pid, &ws, WNOHANG) == pid) {
				exited = 1;
				if (WIFSIGNALED(ws)) {
					sig = WTERMSIG(ws);
					status = 128 + sig;
				} else {
					status = WEXITSTATUS(ws);
				}
			}
		}
	}
	if (fin >= 0)
		close(fin);
	if (fout >= 0)
		close(fout);
	if (ferr >= 0)
		close(ferr);
	if (timed_out)
		kill(-pid, SIGKILL); /* whatever the session left behind */
	char head[MAX_HEADER];
	int hn = snprintf(head, sizeof(head), "R %lu %d %d %zu %zu %s\n", seq, status, sig, out.len, errb.len,
			  timed_out ? "t" : "-");
	write_all(1, head, (size_t)hn);
	write_all(1, out.data, out.len);
	write_all(1, errb.data, errb.len);
	free(out.data);
	free(errb.data);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
	int sigfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sigfd < 0)
		return 5;
	write_all(1, "NHCHAN 1\n", 9);
	char line[MAX_HEADER];
	for (;;) {
		int got = read_line(line, sizeof(line));
		if (got == 0)
			return 0;
		unsigned long seq;
		size_t cmdlen, stdinlen;
		long timeout_ms;
		if (got < 0 || sscanf(line, "C %lu %zu %zu %ld", &seq, &cmdlen, &stdinlen, &timeout_ms) != 4 ||
		    cmdlen > MAX_PAYLOAD || stdinlen > MAX_PAYLOAD) {
			fprintf(stderr, "cmdchan: malformed request header\n");
			return 2;
		}
		char *cmd = malloc(cmdlen + 1), *in = malloc(stdinlen + 1);
		if (!cmd || !in)
			return 4;
		if (!read_exact(cmd, cmdlen) || !read_exact(in, stdinlen))
			return 0;
		cmd[cmdlen] = 0;
		run(seq, cmd, in, stdinlen, timeout_ms, sigfd);
		free(cmd);
		free(in);
	}
}
