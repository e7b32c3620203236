/* liblsl 1.13 (bundled by the lsl crate) ships a Boost that tests `PTHREAD_STACK_MIN > 0` in the
 * preprocessor; glibc >= 2.34 defines PTHREAD_STACK_MIN as a sysconf() call, which breaks that
 * test. Force-included into every C++ unit of the build through .cargo/config.toml. */
#include <limits.h>
#undef PTHREAD_STACK_MIN
#define PTHREAD_STACK_MIN 16384
