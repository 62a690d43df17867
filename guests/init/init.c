/*
 * init: PID 1 of the ftvm guest.
 *
 * Mounts the pseudo file systems and /dev/vda (on /mnt, unless it is already
 * the root file system), brings up lo and eth0, runs /etc/ftvm/rc if there is
 * one (the Debian guest starts its services there), prints "ftvm-guest:
 * ready", then keeps a shell on the console. When
 * the shell exits, or busybox's poweroff/halt/reboot signal us, it stops every
 * process, syncs, unmounts and powers off (or reboots).
 *
 * Signals are blocked and taken with sigwaitinfo() in one loop, so a request
 * that arrives while we reap a child can never be lost.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void say(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int n = snprintf(buf, sizeof buf, "ftvm-guest: ");

	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof buf - n, fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof buf - 1)
		n = sizeof buf - 2;
	buf[n++] = '\n';
	if (write(STDOUT_FILENO, buf, n) < 0) {
		/* Nowhere to report it. */
	}
}

static void mount_or_say(const char *src, const char *dst, const char *type)
{
	mkdir(dst, 0755);
	if (mount(src, dst, type, 0, NULL) != 0 && errno != EBUSY)
		say("mount %s on %s failed: %s", type, dst, strerror(errno));
}

/* Sets an interface up, and gives it an IPv4 address if addr is not NULL. */
static int ifup(int s, const char *name, const char *addr, const char *mask)
{
	struct ifreq ifr;

	memset(&ifr, 0, sizeof ifr);
	strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0)
		return -1; /* no such interface */
	if (addr) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;

		sin->sin_family = AF_INET;
		inet_pton(AF_INET, addr, &sin->sin_addr);
		if (ioctl(s, SIOCSIFADDR, &ifr) != 0)
			say("%s: set address: %s", name, strerror(errno));
		inet_pton(AF_INET, mask, &sin->sin_addr);
		if (ioctl(s, SIOCSIFNETMASK, &ifr) != 0)
			say("%s: set netmask: %s", name, strerror(errno));
		ioctl(s, SIOCGIFFLAGS, &ifr);
	}
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) {
		say("%s: up: %s", name, strerror(errno));
		return -1;
	}
	return 0;
}

/* lo always; eth0 only if it exists. Its address comes from the kernel's
 * ip= autoconfiguration, or later from `udhcpc -i eth0`. */
static void network(void)
{
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct ifreq ifr;

	if (s < 0) {
		say("no IPv4 socket: %s", strerror(errno));
		return;
	}
	ifup(s, "lo", "127.0.0.1", "255.0.0.0");
	if (ifup(s, "eth0", NULL, NULL) == 0) {
		memset(&ifr, 0, sizeof ifr);
		strcpy(ifr.ifr_name, "eth0");
		if (ioctl(s, SIOCGIFADDR, &ifr) == 0)
			say("eth0 up, address %s",
			    inet_ntoa(((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr));
		else
			say("eth0 up, no address (boot with ip=... or run udhcpc -i eth0)");
	}
	close(s);
}

/* The device behind /dev/console, so the shell gets a real controlling
 * terminal (job control, Ctrl-C); the last entry of "active" is the one
 * /dev/console refers to. */
static void console_path(char *path, size_t len)
{
	char buf[128] = "";
	char *name;
	int fd = open("/sys/class/tty/console/active", O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;

	if (fd >= 0)
		close(fd);
	snprintf(path, len, "/dev/console");
	if (n <= 0)
		return;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	name = strrchr(buf, ' ');
	name = name ? name + 1 : buf;
	if (*name)
		snprintf(path, len, "/dev/%s", name);
}

/* Whether dev is the block device the root file system lives on. */
static int is_root_device(const char *dev)
{
	struct stat root, d;

	return stat("/", &root) == 0 && stat(dev, &d) == 0 && S_ISBLK(d.st_mode) &&
	       d.st_rdev == root.st_dev;
}

/* Runs /etc/ftvm/rc (a distribution's services) to its end, with the console
 * as its output, and reaps whatever it leaves behind later in main's loop. */
static void run_rc(const sigset_t *blocked)
{
	const char *rc = "/etc/ftvm/rc";
	int status;

	if (access(rc, X_OK) != 0)
		return;
	pid_t pid = fork();
	if (pid == 0) {
		sigprocmask(SIG_UNBLOCK, blocked, NULL);
		execl(rc, rc, (char *)NULL);
		_exit(127);
	}
	if (pid < 0) {
		say("cannot start %s: %s", rc, strerror(errno));
		return;
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		say("%s failed (status %d)", rc, status);
}

static pid_t spawn_shell(const char *tty, const sigset_t *blocked)
{
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	sigprocmask(SIG_UNBLOCK, blocked, NULL);
	setsid();
	int fd = open(tty, O_RDWR);
	if (fd < 0)
		fd = open("/dev/console", O_RDWR);
	if (fd >= 0) {
		ioctl(fd, TIOCSCTTY, 1);
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	chdir("/root");
	execl("/bin/sh", "-sh", (char *)NULL);
	_exit(127);
}

static void stop_everything(int how)
{
	say("%s", how == RB_AUTOBOOT ? "rebooting" : "powering off");
	kill(-1, SIGTERM);
	for (int i = 0; i < 10 && waitpid(-1, NULL, WNOHANG) >= 0; i++)
		usleep(100 * 1000);
	kill(-1, SIGKILL);
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	sync();
	if (umount("/mnt") != 0 && errno != EINVAL)
		say("umount /mnt: %s", strerror(errno));
	reboot(how);
	say("reboot(2) failed: %s", strerror(errno));
	for (;;)
		pause(); /* PID 1 must not exit */
}

int main(void)
{
	sigset_t set;
	char tty[64];
	int how = RB_POWER_OFF;

	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGUSR1); /* busybox halt */
	sigaddset(&set, SIGUSR2); /* busybox poweroff */
	sigaddset(&set, SIGTERM); /* busybox reboot */
	sigprocmask(SIG_BLOCK, &set, NULL);

	mount_or_say("proc", "/proc", "proc");
	mount_or_say("sysfs", "/sys", "sysfs");
	mount_or_say("devtmpfs", "/dev", "devtmpfs");
	mount_or_say("devpts", "/dev/pts", "devpts");
	if (access("/dev/vda", F_OK) == 0 && !is_root_device("/dev/vda")) {
		mkdir("/mnt", 0755);
		if (mount("/dev/vda", "/mnt", "ext2", 0, NULL) == 0)
			say("/dev/vda mounted on /mnt");
		else
			say("mount /dev/vda on /mnt failed: %s", strerror(errno));
	}
	sethostname("ftvm", 4);
	network();
	setenv("PATH", "/sbin:/usr/sbin:/bin:/usr/bin", 1);
	setenv("HOME", "/root", 1);
	setenv("TERM", "vt100", 1);
	console_path(tty, sizeof tty);
	run_rc(&set);
	say("ready");

	pid_t shell = spawn_shell(tty, &set);
	for (;;) {
		siginfo_t si;
		int status;
		pid_t pid;

		if (sigwaitinfo(&set, &si) < 0)
			continue;
		if (si.si_signo != SIGCHLD) {
			how = si.si_signo == SIGTERM ? RB_AUTOBOOT : RB_POWER_OFF;
			break;
		}
		/* Reap every child, orphans included: that is PID 1's job. */
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			if (pid != shell)
				continue;
			if (WIFEXITED(status)) {
				shell = 0;
				break;
			}
			say("shell killed by signal %d; respawning", WTERMSIG(status));
			sleep(1);
			shell = spawn_shell(tty, &set);
		}
		if (shell == 0)
			break; /* the shell exited: power off */
	}
	stop_everything(how);
	return 0;
}
