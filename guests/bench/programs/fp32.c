/* Floating point (single precision): what code written with `float` runs (graphics,
 * audio, embedded control loops): the n-body simulation of fp.c in float with sqrtf,
 * a blocked matrix multiply in float, and an FIR filter over a float signal; the
 * checksum folds the results' bits. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define STEPS  100000
#define MATN   64
#define MATRIX_ROUNDS 16

#define PI 3.14159265f
#define SOLAR_MASS (4 * PI * PI)
#define DAYS_PER_YEAR 365.24f

struct body {
    float x, y, z, vx, vy, vz, mass;
};

static struct body bodies[] = {
    { 0, 0, 0, 0, 0, 0, SOLAR_MASS },
    { 4.84143144246472090e+00f, -1.16032004402742839e+00f, -1.03622044471123109e-01f,
      1.66007664274403694e-03f * DAYS_PER_YEAR, 7.69901118419740425e-03f * DAYS_PER_YEAR,
      -6.90460016972063023e-05f * DAYS_PER_YEAR, 9.54791938424326609e-04f * SOLAR_MASS },
    { 8.34336671824457987e+00f, 4.12479856412430479e+00f, -4.03523417114321381e-01f,
      -2.76742510726862411e-03f * DAYS_PER_YEAR, 4.99852801234917238e-03f * DAYS_PER_YEAR,
      2.30417297573763929e-05f * DAYS_PER_YEAR, 2.85885980666130812e-04f * SOLAR_MASS },
    { 1.28943695621391310e+01f, -1.51111514016986312e+01f, -2.23307578892655734e-01f,
      2.96460137564761618e-03f * DAYS_PER_YEAR, 2.37847173959480950e-03f * DAYS_PER_YEAR,
      -2.96589568540237556e-05f * DAYS_PER_YEAR, 4.36624404335156298e-05f * SOLAR_MASS },
    { 1.53796971148509165e+01f, -2.59193146099879641e+01f, 1.79258772950371181e-01f,
      2.68067772490389322e-03f * DAYS_PER_YEAR, 1.62824170038242295e-03f * DAYS_PER_YEAR,
      -9.51592254519715870e-05f * DAYS_PER_YEAR, 5.15138902046611451e-05f * SOLAR_MASS },
};
#define NBODIES (int)(sizeof bodies / sizeof bodies[0])

static float a[MATN][MATN], b[MATN][MATN], c[MATN][MATN];
static uint64_t checksum = 0xcbf29ce484222325ULL;

static void mix_float(float d)
{
    uint32_t bits;
    memcpy(&bits, &d, sizeof bits);
    checksum = (checksum ^ bits) * 0x100000001b3ULL;
}

static void offset_momentum(void)
{
    float px = 0, py = 0, pz = 0;
    for (int i = 0; i < NBODIES; i++) {
        px += bodies[i].vx * bodies[i].mass;
        py += bodies[i].vy * bodies[i].mass;
        pz += bodies[i].vz * bodies[i].mass;
    }
    bodies[0].vx = -px / SOLAR_MASS;
    bodies[0].vy = -py / SOLAR_MASS;
    bodies[0].vz = -pz / SOLAR_MASS;
}

static float energy(void)
{
    float e = 0;
    for (int i = 0; i < NBODIES; i++) {
        struct body *b = &bodies[i];
        e += 0.5f * b->mass * (b->vx * b->vx + b->vy * b->vy + b->vz * b->vz);
        for (int j = i + 1; j < NBODIES; j++) {
            struct body *o = &bodies[j];
            float dx = b->x - o->x, dy = b->y - o->y, dz = b->z - o->z;
            e -= b->mass * o->mass / sqrtf(dx * dx + dy * dy + dz * dz);
        }
    }
    return e;
}

static void advance(float dt)
{
    for (int i = 0; i < NBODIES; i++) {
        struct body *b = &bodies[i];
        for (int j = i + 1; j < NBODIES; j++) {
            struct body *o = &bodies[j];
            float dx = b->x - o->x, dy = b->y - o->y, dz = b->z - o->z;
            float d2 = dx * dx + dy * dy + dz * dz;
            float mag = dt / (d2 * sqrtf(d2));
            b->vx -= dx * o->mass * mag;
            b->vy -= dy * o->mass * mag;
            b->vz -= dz * o->mass * mag;
            o->vx += dx * b->mass * mag;
            o->vy += dy * b->mass * mag;
            o->vz += dz * b->mass * mag;
        }
    }
    for (int i = 0; i < NBODIES; i++) {
        bodies[i].x += dt * bodies[i].vx;
        bodies[i].y += dt * bodies[i].vy;
        bodies[i].z += dt * bodies[i].vz;
    }
}

static float newton_sqrtf(float x)
{
    float r = x > 1 ? x / 2 : 1;
    for (int i = 0; i < 30; i++)
        r = 0.5f * (r + x / r);
    return r;
}


#define TAPS 32
#define SAMPLES 4096
#define FIR_ROUNDS 24
static float signal[SAMPLES], filtered[SAMPLES], taps[TAPS];

static void fir(void)
{
    for (int t = 0; t < TAPS; t++)
        taps[t] = sinf(0.3f * (float)(t + 1)) / (float)(t + 1);
    for (int i = 0; i < SAMPLES; i++)
        signal[i] = sinf(0.01f * (float)i) + 0.25f * cosf(0.37f * (float)i);
    for (int r = 0; r < FIR_ROUNDS; r++) {
        for (int i = TAPS; i < SAMPLES; i++) {
            float acc = 0.0f;
            for (int t = 0; t < TAPS; t++)
                acc += taps[t] * signal[i - t];
            filtered[i] = acc;
        }
        float peak = 0.0f;
        for (int i = 0; i < SAMPLES; i++) {
            signal[i] = 0.5f * signal[i] + 0.5f * filtered[i];
            peak = fmaxf(peak, fabsf(signal[i]));
        }
        mix_float(peak);
    }
}

int main(void)
{
    fir();
    printf("fir: %d rounds of %d taps over %d samples\n", FIR_ROUNDS, TAPS, SAMPLES);
    offset_momentum();
    float e0 = energy();
    for (int s = 0; s < STEPS; s++)
        advance(0.01f);
    float e1 = energy();
    printf("n-body: %d steps, energy %.6f -> %.6f\n", STEPS, (double)e0, (double)e1);
    mix_float(e0);
    mix_float(e1);

    for (int i = 0; i < MATN; i++)
        for (int j = 0; j < MATN; j++) {
            a[i][j] = (float)((i * 7 + j * 3) % 17) / 8.0f - 1.0f;
            b[i][j] = (float)((i * 5 + j * 11) % 13) / 4.0f + 0.25f;
        }
    for (int r = 0; r < MATRIX_ROUNDS; r++) {
        memset(c, 0, sizeof c);
        for (int i = 0; i < MATN; i++)
            for (int k = 0; k < MATN; k++) {
                float aik = a[i][k];
                for (int j = 0; j < MATN; j++)
                    c[i][j] += aik * b[k][j];
            }
        float trace = 0, norm = 0;
        for (int i = 0; i < MATN; i++) {
            trace += c[i][i];
            for (int j = 0; j < MATN; j++)
                norm += c[i][j] * c[i][j];
        }
        mix_float(trace);
        mix_float(sqrtf(norm));
        mix_float(newton_sqrtf(norm));
        /* feed the result back, scaled, so every round differs */
        for (int i = 0; i < MATN; i++)
            for (int j = 0; j < MATN; j++)
                a[i][j] = c[i][j] / (norm / (MATN * MATN)) - a[i][j] * 0.5f;
    }
    printf("matrix: %d rounds of %dx%d\n", MATRIX_ROUNDS, MATN, MATN);
    printf("BENCH-CHECKSUM 0x%016llx\n", (unsigned long long)checksum);
    return 0;
}
