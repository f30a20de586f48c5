module tidings/deploy/sesstub

go 1.26
