/*
 * A PKCS#11 fault wrapper for tests (never shipped): forwards every call to the real module (SoftHSM)
 * and, when told to through the shim_* functions, injects errors and latency into signing.
 *
 *   FAULTSHIM_TARGET   path of the real module (default /usr/lib/softhsm/libsofthsm2.so)
 *
 * Faults:
 *   shim_fail_sign_init(rv, count, percent, seed)  C_SignInit returns rv without reaching the module,
 *                                                  for the next `count` calls (-1: no limit), each with
 *                                                  probability percent/100; nothing is left half-done.
 *   shim_fail_after_sign(rv, count)                C_Sign (the call that produces the signature) runs in
 *                                                  the module, then the signature is thrown away and rv
 *                                                  returned: the token did the work, the caller gets none.
 *   shim_sign_delay_ms(ms)                         C_Sign sleeps before producing the signature.
 *   shim_reset()                                   all faults off, counters zero.
 *   shim_sign_init_calls(), shim_injected()        counters, for assertions.
 *   shim_login_calls()                             C_Login calls since the last reset.
 *   shim_threads_seen()                            how many distinct threads have called C_SignInit or
 *                                                  C_Sign since the last reset (the worker promises one).
 *
 * C_Initialize on a module this process already initialised (the tests' main token) is "borrowed":
 * it answers CKR_OK and the matching C_Finalize leaves the real module alone.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR real;
static CK_FUNCTION_LIST shim;
static int borrowed;

static volatile CK_RV init_fault_rv;
static volatile long init_fault_count;
static volatile unsigned init_fault_percent;
static unsigned init_fault_seed;
static volatile CK_RV after_sign_rv;
static volatile long after_sign_count;
static volatile unsigned long sign_delay_ms;
static volatile unsigned long sign_init_calls;
static volatile unsigned long injected;
static volatile unsigned long login_calls;

#define MAX_THREADS 64
static pthread_mutex_t threads_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t threads[MAX_THREADS];
static unsigned threads_seen;

static void note_thread(void) {
    pthread_t self = pthread_self();
    unsigned i;
    pthread_mutex_lock(&threads_lock);
    for (i = 0; i < threads_seen; i++) {
        if (pthread_equal(threads[i], self)) break;
    }
    if (i == threads_seen && threads_seen < MAX_THREADS) threads[threads_seen++] = self;
    pthread_mutex_unlock(&threads_lock);
}

unsigned shim_threads_seen(void) { return threads_seen; }

void shim_reset(void) {
    init_fault_rv = CKR_OK;
    init_fault_count = 0;
    init_fault_percent = 0;
    after_sign_rv = CKR_OK;
    after_sign_count = 0;
    sign_delay_ms = 0;
    sign_init_calls = 0;
    injected = 0;
    login_calls = 0;
    pthread_mutex_lock(&threads_lock);
    threads_seen = 0;
    pthread_mutex_unlock(&threads_lock);
}

void shim_fail_sign_init(unsigned long rv, long count, unsigned percent, unsigned seed) {
    init_fault_seed = seed;
    init_fault_percent = percent;
    init_fault_count = count;
    init_fault_rv = rv;
}

void shim_fail_after_sign(unsigned long rv, long count) {
    after_sign_count = count;
    after_sign_rv = rv;
}

void shim_sign_delay_ms(unsigned long ms) { sign_delay_ms = ms; }
unsigned long shim_sign_init_calls(void) { return sign_init_calls; }
unsigned long shim_injected(void) { return injected; }
unsigned long shim_login_calls(void) { return login_calls; }

static int take(volatile long *count) {
    if (*count == 0) return 0;
    if (*count > 0) (*count)--;
    return 1;
}

static CK_RV shim_C_Initialize(CK_VOID_PTR args) {
    CK_RV rv = real->C_Initialize(args);
    if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        borrowed = 1;
        return CKR_OK;
    }
    borrowed = 0;
    return rv;
}

static CK_RV shim_C_Finalize(CK_VOID_PTR reserved) {
    if (borrowed) {
        borrowed = 0;
        return CKR_OK;
    }
    return real->C_Finalize(reserved);
}

static CK_RV shim_C_Login(CK_SESSION_HANDLE session, CK_USER_TYPE user_type, CK_UTF8CHAR_PTR pin,
                          CK_ULONG pin_len) {
    login_calls++;
    return real->C_Login(session, user_type, pin, pin_len);
}

static CK_RV shim_C_SignInit(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key) {
    note_thread();
    sign_init_calls++;
    if (init_fault_rv != CKR_OK && init_fault_count != 0) {
        int hit = init_fault_percent == 0 || (unsigned)(rand_r(&init_fault_seed) % 100) < init_fault_percent;
        if (hit && take(&init_fault_count)) {
            injected++;
            return init_fault_rv;
        }
    }
    return real->C_SignInit(session, mechanism, key);
}

static CK_RV shim_C_Sign(CK_SESSION_HANDLE session, CK_BYTE_PTR data, CK_ULONG data_len,
                         CK_BYTE_PTR signature, CK_ULONG_PTR signature_len) {
    CK_RV rv;
    note_thread();
    if (signature != NULL && sign_delay_ms > 0) {
        struct timespec pause = {(time_t)(sign_delay_ms / 1000), (long)(sign_delay_ms % 1000) * 1000000L};
        nanosleep(&pause, NULL);
    }
    rv = real->C_Sign(session, data, data_len, signature, signature_len);
    if (signature != NULL && rv == CKR_OK && after_sign_rv != CKR_OK && take(&after_sign_count)) {
        injected++;
        memset(signature, 0, *signature_len);
        return after_sign_rv;
    }
    return rv;
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
    if (real == NULL) {
        const char *target = getenv("FAULTSHIM_TARGET");
        void *module = dlopen(target ? target : "/usr/lib/softhsm/libsofthsm2.so", RTLD_NOW | RTLD_LOCAL);
        CK_C_GetFunctionList get;
        if (module == NULL) return CKR_GENERAL_ERROR;
        get = (CK_C_GetFunctionList)dlsym(module, "C_GetFunctionList");
        if (get == NULL || get(&real) != CKR_OK) return CKR_GENERAL_ERROR;
        shim = *real;
        shim.C_Initialize = shim_C_Initialize;
        shim.C_Finalize = shim_C_Finalize;
        shim.C_GetFunctionList = C_GetFunctionList;
        shim.C_SignInit = shim_C_SignInit;
        shim.C_Login = shim_C_Login;
        shim.C_Sign = shim_C_Sign;
    }
    *list = &shim;
    return CKR_OK;
}
