// SPDX-License-Identifier: MIT
/*
 * strerror.c - heca_strerror(): words for the errno values libheca returns, in heca's terms
 * where the protocol gives a code a meaning of its own.
 */
#include <errno.h>
#include <string.h>

#include "heca.h"

const char *heca_strerror(int err)
{
	switch (-err) {
	case 0: return "success";
	case EPROTO: return "protocol error: malformed frame";
	case EBADMSG: return "page checksum mismatch";
	case ETIMEDOUT: return "sponsor did not answer in time";
	case ECONNRESET: return "sponsor connection lost";
	case ECONNREFUSED: return "sponsor refused the connection (not running?)";
	case EHOSTUNREACH: return "sponsor address unreachable or unknown";
	case ENOSPC: return "sponsor is full";
	case ENOENT: return "sponsor does not hold the page or segment";
	case EACCES: return "refused by the sponsor (wrong cluster or key)";
	case EPERM: return "operation not permitted";
	case ENOSYS: return "not supported by this kernel";
	case EINVAL: return "invalid argument";
	case ENOMEM: return "out of memory";
	case EBUSY: return "range already registered";
	case EIO: return "page could not be read from any sponsor";
	case EEXIST: return "already exists";
	case ENOTCONN: return "no sponsor connected";
	case EMSGSIZE: return "request too large";
	case EAGAIN: return "try again";
	case ESHUTDOWN: return "heca is shutting down";
	case EOPNOTSUPP: return "operation not supported";
	}
	return strerrordesc_np(-err) ? strerrordesc_np(-err) : "unknown error";
}
